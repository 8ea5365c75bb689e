-- saslnetauth bridge for Dovecot 2.4's Lua passdb and userdb.
--
-- passdb: auth_password_verify(req, pass) asks the running `saslnetauth serve`
-- over its auth-client UNIX socket, in the Dovecot auth protocol it already
-- speaks (handshake, then AUTH <id> PLAIN service=.. rip=.. lip=.. secured
-- resp=<base64>), so the password, the user's networks and the global
-- networks are decided by the same engine as for Postfix and Exim:
--   OK        -> PASSDB_RESULT_OK (user= carries saslnetauth's canonical name)
--   FAIL      -> PASSDB_RESULT_PASSWORD_MISMATCH (a network denial looks exactly
--                like a wrong password: no oracle)
--   FAIL temp, timeout, socket error -> PASSDB_RESULT_INTERNAL_FAILURE
--                (Dovecot answers a temporary failure; never OK)
--
-- userdb: auth_userdb_lookup(req) asks saslnetauth's userdb socket
-- ([serve] userdb_listen) with Dovecot's auth-master USER lookup: an
-- existing, enabled user gets uid/gid/home from lua_settings; an unknown or
-- disabled user is USER_UNKNOWN (so `doveadm user` and LMTP refuse it).
--
-- One connection per socket and auth-worker process, reused for every request
-- and reopened after any error. Every read and write is bounded by `timeout`
-- seconds, which must stay below Dovecot's own limits (the auth-worker is
-- abandoned after 60 s, clients give up after about 30 s) and above
-- saslnetauth's failure_delay + penalty_max (at most 8 s).
--
-- No auth_passdb_get_cache_key on purpose: Dovecot then caches none of these
-- answers. A cache key without the client address would let a cached success
-- from an allowed network admit the same password from any address.
--
-- Settings (lua_settings { ... }): socket, userdb_socket, timeout, uid, gid,
-- home (%u is replaced by the user name). See docs/dovecot.md, "Lua bridge".

local unix = require("socket.unix")

local conf = {
  socket = "/run/saslnetauth/auth-client",
  userdb_socket = "/run/saslnetauth/userdb",
  timeout = 10,
  uid = "vmail",
  gid = "vmail",
  home = "/var/vmail/%u",
}

local conns = {}    -- socket path -> connected socket
local next_id = 0
local cpid = nil

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(data)
  local out = {}
  for i = 1, #data, 3 do
    local a, b, c = data:byte(i, i + 2)
    local n = (a << 16) | ((b or 0) << 8) | (c or 0)
    out[#out + 1] = B64:sub((n >> 18) + 1, (n >> 18) + 1)
      .. B64:sub(((n >> 12) & 63) + 1, ((n >> 12) & 63) + 1)
      .. (b and B64:sub(((n >> 6) & 63) + 1, ((n >> 6) & 63) + 1) or "=")
      .. (c and B64:sub((n & 63) + 1, (n & 63) + 1) or "=")
  end
  return table.concat(out)
end

-- A value that may go into one TAB-separated field of the auth protocol.
local function field(value)
  if value == nil then return "" end
  value = tostring(value)
  if value:find("[%c]") then return nil end
  return value
end

local function close(path)
  local s = conns[path]
  conns[path] = nil
  if s then pcall(s.close, s) end
end

local function my_pid()
  if cpid == nil then
    local ok, unistd = pcall(require, "posix.unistd")
    cpid = ok and unistd.getpid() or 0
  end
  return cpid
end

-- Connect and complete the handshake: read the server's lines up to `last`
-- (DONE for auth-client; the master handshake ends with SPID), then send ours.
local function connect(path, last)
  local s = unix()
  s:settimeout(conf.timeout)
  local ok, err = s:connect(path)
  if not ok then
    s:close()
    return nil, "connect " .. path .. ": " .. tostring(err)
  end
  local ok2, err2 = s:send("VERSION\t1\t2\nCPID\t" .. my_pid() .. "\n")
  if not ok2 then
    s:close()
    return nil, "send: " .. tostring(err2)
  end
  for _ = 1, 64 do
    local line, rerr = s:receive("*l")
    if not line then
      s:close()
      return nil, "handshake: " .. tostring(rerr)
    end
    local cmd = line:match("^([^\t]*)")
    if cmd == "VERSION" and line:match("^VERSION\t(%d+)") ~= "1" then
      s:close()
      return nil, "incompatible protocol version: " .. line
    end
    if cmd == last then
      return s
    end
  end
  s:close()
  return nil, "handshake too long"
end

-- Send one request line and return the reply line for `id`, reusing the
-- connection. A reused connection that turns out closed (server restarted)
-- is reopened once; a timeout is never retried (it would double the wait).
local function ask(path, last, make_line)
  for attempt = 1, 2 do
    local s = conns[path]
    local reused = s ~= nil
    if not s then
      local err
      s, err = connect(path, last)
      if not s then return nil, err end
      conns[path] = s
    end
    next_id = next_id % 2000000000 + 1
    local id = tostring(next_id)
    local ok, err = s:send(make_line(id))
    local line
    if ok then
      repeat
        line, err = s:receive("*l")
      until not line or line:match("^[^\t]*\t([^\t]*)") == id
    end
    if line then return line end
    close(path)
    if not (reused and attempt == 1 and err == "closed") then
      return nil, tostring(err)
    end
  end
end

function script_init(args)
  for key, value in pairs(args or {}) do
    if conf[key] ~= nil then conf[key] = value end
  end
  conf.timeout = tonumber(conf.timeout) or 10
  return 0
end

function script_deinit()
  for path in pairs(conns) do close(path) end
end

function auth_password_verify(req, pass)
  local user, service = field(req.user), field(req.protocol)
  local rip, lip = field(req.remote_ip), field(req.local_ip)
  if not (user and service and rip and lip) or user == "" then
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, nil
  end
  local resp = base64("\0" .. user .. "\0" .. pass)
  -- Dovecot has already decided whether the connection is secure; saslnetauth
  -- decides on the password and the networks only.
  local line, err = ask(conf.socket, "DONE", function(id)
    return "AUTH\t" .. id .. "\tPLAIN\tservice=" .. service .. "\tnologin\tlip=" .. lip
      .. "\trip=" .. rip .. "\tsecured\tresp=" .. resp .. "\n"
  end)
  if not line then
    req:log_error("saslnetauth: " .. err)
    return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, "saslnetauth unavailable"
  end
  local cmd = line:match("^([^\t]*)")
  if cmd == "OK" then
    local canonical = line:match("\tuser=([^\t]*)")
    if canonical and canonical ~= "" then
      return dovecot.auth.PASSDB_RESULT_OK, { user = canonical }
    end
    return dovecot.auth.PASSDB_RESULT_OK, {}
  end
  if cmd == "FAIL" then
    if line:match("\tcode=temp_fail") or line:match("\ttemp\t") or line:match("\ttemp$") then
      return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, "saslnetauth: temporary failure"
    end
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, nil
  end
  close(conf.socket)
  return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, "saslnetauth: unexpected reply"
end

function auth_userdb_lookup(req)
  local user, service = field(req.user), field(req.protocol)
  if not (user and service) or user == "" then
    return dovecot.auth.USERDB_RESULT_USER_UNKNOWN, nil
  end
  local line, err = ask(conf.userdb_socket, "SPID", function(id)
    return "USER\t" .. id .. "\t" .. user .. "\tservice=" .. service .. "\n"
  end)
  if not line then
    req:log_error("saslnetauth userdb: " .. err)
    return dovecot.auth.USERDB_RESULT_INTERNAL_FAILURE, "saslnetauth unavailable"
  end
  local cmd = line:match("^([^\t]*)")
  if cmd == "USER" then
    local name = line:match("^USER\t[^\t]*\t([^\t]*)")
    return dovecot.auth.USERDB_RESULT_OK, {
      user = name,
      uid = conf.uid,
      gid = conf.gid,
      home = (conf.home:gsub("%%u", function() return name end)),
    }
  end
  if cmd == "NOTFOUND" then
    return dovecot.auth.USERDB_RESULT_USER_UNKNOWN, nil
  end
  close(conf.userdb_socket)
  return dovecot.auth.USERDB_RESULT_INTERNAL_FAILURE, "saslnetauth: userdb lookup failed"
end
