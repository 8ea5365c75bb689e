"""The configuration's schema: one dataclass per TOML table, each key with its
default and its meaning (``dovecot-examples/saslnetauth.toml`` and the configuration
table of docs/configuration.md say the same; a test keeps them in step). Reading,
checking and merging a file is :mod:`saslnetauth.config`'s job. Standard
library only: the checkpassword fast path imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_ALLOWED_GROUPS",
    "DEFAULT_ALLOWED_USERS",
    "DEFAULT_DATABASE_URL",
    "AlertsConfig",
    "CheckpasswordConfig",
    "Config",
    "GeoipConfig",
    "LoggingConfig",
    "PamConfig",
    "PasswordsConfig",
    "PolicyConfig",
    "ProxiesConfig",
    "ReportConfig",
    "RevokeConfig",
    "SendingConfig",
    "ServeConfig",
    "StateConfig",
]

DEFAULT_DATABASE_URL = "sqlite:////var/lib/saslnetauth/saslnetauth.db"
#: Who may connect to the UNIX sockets by default, besides root and the server's own
#: user: Postfix's smtpd, Exim (Debian's user name) and Dovecot's auth process
#: (saslnetauth-checkpassword). Skipped where the system does not have them.
DEFAULT_ALLOWED_USERS = ("root", "postfix", "Debian-exim", "dovecot")
DEFAULT_ALLOWED_GROUPS = ("postfix", "Debian-exim", "dovecot")


@dataclass
class PasswordsConfig:
    #: Scheme for new hashes: ARGON2ID, ARGON2I, BLF-CRYPT, SHA512-CRYPT, SHA256-CRYPT, SSHA512.
    default_scheme: str = "ARGON2ID"
    #: After a successful login, store the password again in the default scheme.
    rehash_on_login: bool = False
    argon2_memory_kib: int = 65536
    argon2_time_cost: int = 3
    argon2_parallelism: int = 1
    bcrypt_cost: int = 10
    sha_crypt_rounds: int = 5000
    #: Where the main password may log in, for users without a setting of their own
    #: (`user set --main-password-services`): "all", "none" or services such as
    #: "smtp,submission". Elsewhere only app passwords work (the main password is
    #: refused like a wrong one, reason app_password_required).
    main_password_services: str = "all"  # noqa: S105 - service names, not a password


@dataclass
class ServeConfig:
    #: Where to listen: ``unix:/path`` or ``inet:HOST:PORT`` (``inet:[::1]:PORT``).
    listen: list[str] = field(default_factory=lambda: ["unix:/run/saslnetauth/auth-client"])
    #: Seconds from a request's arrival before a failure is answered (0 allowed; well
    #: under Postfix's 10 s); never earlier than the slowest verification (deadline.py).
    failure_delay: float = 2.0
    #: reason= text of every FAIL, whatever the cause ("" = send none, like Dovecot).
    fail_reason: str = "Authentication failed"
    #: Permissions, owner and group of UNIX sockets we create.
    socket_mode: str = "0660"
    socket_owner: str = ""
    socket_group: str = ""
    #: Who may connect: a UNIX peer (SO_PEERCRED) or the owner of a local TCP
    #: client's socket (sock_diag); users and groups by name or number. Root and
    #: the server's own user always may. Names that do not exist are an error,
    #: except the built-in ones (postfix, Debian-exim, dovecot), which are skipped
    #: on systems without them.
    allowed_users: list[str] = field(default_factory=lambda: list(DEFAULT_ALLOWED_USERS))
    allowed_groups: list[str] = field(default_factory=lambda: list(DEFAULT_ALLOWED_GROUPS))
    #: TCP clients allowed to connect (addresses or networks); others are closed.
    #: A local one must be an allowed user as well.
    allowed_tcp_peers: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1"])
    #: Allow TCP listeners on addresses other than loopback (whoever connects
    #: chooses the rip= of its logins: restrict allowed_tcp_peers too).
    allow_remote_listen: bool = False
    #: Decision workers (0 = one per core): processes, or threads (see worker_mode).
    workers: int = 0
    #: "processes" (default: every core also runs the Python around the hashes) or
    #: "threads" (one process; only the hashes themselves run in parallel).
    worker_mode: str = "processes"
    #: Most requests being verified or waiting for a worker, over all clients.
    max_pending: int = 1024
    #: Most requests in flight on one connection; more closes the connection.
    max_requests_per_connection: int = 64
    #: Most connections at once of clients other than the mail servers' users (TCP
    #: peers known by their address); more are refused. The mail servers' users
    #: (root, the server's own user, allowed_users, allowed_groups) are bounded only
    #: by the file descriptor limit (docs/serve.md, "File descriptor limits").
    max_connections: int = 1000
    #: Most connections of one such peer (a TCP address); 0 = half of
    #: max_connections, so that one peer can never take all of them.
    max_connections_per_peer: int = 0
    #: Seconds a new connection may take to send its VERSION (Postfix, Exim and
    #: Dovecot send it at once); silent ones are closed.
    handshake_timeout: float = 5.0
    #: Seconds from a request's arrival (brake included) to its decision; later it fails
    #: temporarily (requests still queued then are never worked on).
    request_timeout: float = 8.0
    #: Share of the decision workers that may verify logins which cannot succeed (address
    #: outside every network that applies), and only while no login that could succeed
    #: waits (at least one worker unless 0). Beyond it they are answered FAIL without a
    #: hash (0 = never verify them: no stolen-password alerts; 1 = no bound).
    hopeless_share: float = 0.5
    #: Seconds a request may wait for the client's CONT before it expires.
    cont_timeout: float = 60.0
    #: Seconds without any traffic before an idle connection is closed (0 = never).
    #: Longer than Postfix's smtpd_timeout (300 s) plus max_idle (100 s): an smtpd
    #: keeps its connection between sessions and finds it closed only on its next
    #: write (it reconnects then).
    idle_timeout: float = 600.0
    #: Brute-force brake per client (IPv4 address, IPv6 /penalty_ipv6_prefix), like
    #: Dovecot's auth_penalty: after penalty_free_failures failures, each request waits
    #: penalty_base seconds, doubling per failure, at most penalty_max (0 = off).
    #: A success clears it (one verified here: not a policy endpoint's report).
    penalty_base: float = 0.5
    penalty_max: float = 4.0
    penalty_free_failures: int = 2
    penalty_ipv6_prefix: int = 64
    #: Clients remembered at most (least recently failed are forgotten first).
    penalty_max_entries: int = 100000
    #: Also brake failures per user name, but only those from outside the user's own
    #: networks (so it can never lock the real user out of an allowed network);
    #: unknown names alike (outside the global networks), so it enumerates nobody.
    user_penalty: bool = False
    #: Command run when a correct password comes from a forbidden network (likely
    #: stolen credentials, SASLNETAUTH_EVENT=stolen_credentials) and on an allowed
    #: login from a new place (SASLNETAUTH_EVENT=new_location, see [alerts]), e.g.
    #: ["/usr/local/bin/alert-admin"]. Its environment is only PATH, LANG and
    #: SASLNETAUTH_* (serve/alerts.py); never the password. [] = none.
    alert_command: list[str] = field(default_factory=list)
    #: Seconds before the alert command is killed.
    alert_timeout: float = 10.0
    #: Serve Prometheus metrics at http://ADDR/metrics: inet:HOST:PORT or unix:/path
    #: ("" = off). Keep it on loopback or a management network.
    metrics_listen: str = ""
    #: TCP clients that may read the metrics (a UNIX socket: its mode 0600 decides).
    metrics_allow_from: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1"])
    #: Bearer token every scrape must send (Authorization: Bearer TOKEN; at least 16
    #: characters, in a file others cannot read). "" = none: on loopback every local
    #: user may read the counters (no user names or addresses in them).
    metrics_token: str = ""
    #: Answer Dovecot 2.4's Lua userdb (does this enabled user exist?) with the
    #: auth-master USER lookup on this socket: unix:/path ("" = off). Mode 0600.
    userdb_listen: str = ""
    #: Days an expired network grant (expires_at passed) is kept, shown as EXPIRED,
    #: before the server deletes it (checked hourly; 0 = at the next check).
    expired_keep_days: int = 7


@dataclass
class AlertsConfig:
    #: New-location alerts: the first allowed login of a user (and of each app password)
    #: from a network (IPv4 /24, IPv6 /48), a country or an autonomous system not seen
    #: for it within location_memory_days is logged new_location=... and runs
    #: [serve] alert_command (SASLNETAUTH_EVENT=new_location). Country and ASN need
    #: the [geoip] databases. All three false: no memory is kept at all.
    new_location_network: bool = True
    new_location_country: bool = True
    new_location_asn: bool = True
    #: Days a place is remembered after the last login from it (kept in the database,
    #: shared by every server that uses it).
    location_memory_days: int = 90
    #: Places remembered per user at most (over its main and app passwords); the
    #: least recently seen go first.
    location_max_per_user: int = 200
    #: Days the old hash of a changed password is kept: a failed login with it is
    #: logged reason=retired_password and runs [serve] alert_command (0 = keep none).
    retired_days: int = 30


@dataclass
class PolicyConfig:
    #: Answer Dovecot's auth policy requests (auth_policy_server_url) over HTTP here:
    #: inet:127.0.0.1:4001 or unix:/path ("" = off).
    listen: str = ""
    #: What Dovecot is configured to ask: "before_auth" (auth_policy_check_before_auth =
    #: yes: outside networks are refused before any password is checked; leaks nothing
    #: about the password) or "after_auth" (check_before_auth = no, check_after_auth =
    #: yes: allow is asked only after a correct password, so a refusal reveals that the
    #: password was right, and raises the stolen-password alert). See docs/dovecot.md.
    mode: str = "before_auth"
    #: Users saslnetauth does not know: "global" (the global networks apply) or "reject".
    unknown_users: str = "global"
    #: msg of a refusal (IMAP clients show it; keep it like a wrong-password text).
    reject_message: str = "Authentication failed."
    #: "Name: value" that every request must carry (auth_policy_server_api_header),
    #: compared in constant time; required with listen (a secret of at least 16
    #: characters, e.g. from `openssl rand -hex 32`, in a file others cannot read).
    api_header: str = ""
    #: TCP clients allowed to connect (networks); others are closed at once.
    allow_from: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    #: Largest request body (bytes), seconds to send one request, idle keep-alive seconds.
    max_body: int = 16384
    request_timeout: float = 5.0
    idle_timeout: float = 60.0
    #: Seconds a new connection may take to send its first byte (Dovecot sends its
    #: request at once); silent ones are closed.
    first_byte_timeout: float = 3.0
    #: Most connections at once; more are closed at once. Each is a file descriptor
    #: (docs/serve.md, "File descriptor limits").
    max_connections: int = 512
    #: Most connections of one peer (a TCP address, a UNIX user); 0 = half of
    #: max_connections (Dovecot's auth process opens up to 100 at once).
    max_connections_per_peer: int = 0
    #: Seconds the user lookup may take before the request is refused (below
    #: Dovecot's policy timeout, 2 s by default).
    lookup_timeout: float = 1.5


@dataclass
class CheckpasswordConfig:
    #: Socket of the running `saslnetauth serve` (unix:/path, /path or inet:HOST:PORT).
    socket: str = "/run/saslnetauth/auth-client"
    #: When no server answers: "local" decides in-process, "tempfail" fails temporarily.
    fallback: str = "local"
    #: Accept Dovecot master-user logins (MASTER_USER set); refused by default.
    allow_master_user: bool = False


@dataclass
class PamConfig:
    #: Check the passwords of users whose backend is "pam" with PAM.
    enabled: bool = False
    #: PAM service name: /etc/pam.d/<service> (see dovecot-examples/pam/saslnetauth).
    service: str = "saslnetauth"
    #: Also admit PAM (system) users that are not listed in saslnetauth, under the
    #: global networks only. false: only listed users with backend "pam".
    any_user: bool = False


@dataclass
class ReportConfig:
    #: Keep a record of the server's verdicts in the database (table auth_events)
    #: for `saslnetauth report`; written in the background, never delaying a login.
    record: bool = True
    #: Days the record is kept.
    keep_days: int = 30
    #: Verdicts waiting to be written at most; more are dropped (and counted).
    queue_size: int = 10000


@dataclass
class GeoipConfig:
    #: Country database in MaxMind's .mmdb format (GeoLite2-Country, DB-IP's
    #: dbip-country-lite), an absolute path ("" = none: country terms match nothing).
    country_db: str = ""
    #: ASN database in the same format (GeoLite2-ASN, dbip-asn-lite) ("" = none: ASN
    #: terms match nothing).
    asn_db: str = ""
    #: Days after its build date that a database counts as old: logged when loaded,
    #: and `saslnetauth geoip status` exits 1 (0 = never old).
    max_age_days: int = 45
    #: Seconds between checks whether a database file was replaced (the new one is
    #: in force at most this long after it is renamed into place).
    check_seconds: float = 10.0


@dataclass
class RevokeConfig:
    #: Command run when a credential is revoked, to end the sessions it opened
    #: (docs/revoke.md): an argument list, never a shell. In each argument
    #: {user}, {credential} (an app password's label) and {network} (an expired or
    #: removed network, when it is an address or CIDR) are replaced; an argument that
    #: is only a placeholder with nothing to put there is left out. Its environment is
    #: only PATH, LANG, SASLNETAUTH_USER, SASLNETAUTH_EVENT, SASLNETAUTH_CREDENTIAL and
    #: SASLNETAUTH_NETWORK; never a password. [] = none (the default: doveadm needs
    #: rights on Dovecot's anvil socket, and not every install has Dovecot). For
    #: Dovecot: ["doveadm", "kick", "{user}", "{network}"].
    command: list[str] = field(default_factory=list)
    #: Exit statuses that count as done (doveadm kick exits 68 when nobody was
    #: logged in: nothing to end); others are logged as failures.
    ok_status: list[int] = field(default_factory=lambda: [0, 68])
    #: Seconds before the command is killed.
    timeout: float = 10.0
    #: Seconds between the server's looks for grants and app passwords that expired
    #: (one query over the rows that have an expiry).
    check_seconds: float = 2.0
    #: Commands the server runs at once, and how many more may wait (more are dropped
    #: with a log line).
    max_running: int = 2
    max_queued: int = 1000


@dataclass
class ProxiesConfig:
    #: Trusted proxies (webmail hosts, IMAP/SMTP proxies; docs/webmail.md): their
    #: addresses are never a client's, never matched against any network rule; a
    #: login through one is judged by the client address it forwarded. An entry is
    #: a network, optionally followed by the services it is a proxy for:
    #: "192.0.2.10/32 services=smtp,submission". [] = none. Never list them as networks.
    networks: list[str] = field(default_factory=list)
    #: Seconds a webmail session lives after the last allowed forwarded login of a
    #: user and credential through a proxy: within it the same proxy, forwarding no
    #: client address (the webmail's SMTP AUTH), admits that user and credential.
    #: 0 = no sessions: a proxy without a client address admits nothing.
    session_seconds: float = 1800.0


@dataclass
class SendingConfig:
    #: Answer Postfix's policy requests (check_policy_service; Exim's readsocket) here:
    #: unix:/path (e.g. inside Postfix's spool, private/) or inet:127.0.0.1:PORT
    #: (loopback only; "" = off). The auth socket's peer checks apply.
    listen: str = ""
    #: Limits per credential (the main password, each app password) in a sliding
    #: hour and day; `user set` / `user app-password add` override them (0 = none).
    messages_per_hour: int = 100
    recipients_per_hour: int = 300
    messages_per_day: int = 500
    recipients_per_day: int = 1500
    #: The limits of a session whose login was admitted by a global network, an app
    #: password's network, a country/ASN term or an expiring grant, not by the user's
    #: own networks, are multiplied by this (at least 1 stays).
    outside_factor: float = 0.25
    #: Deferrals of one credential within suspend_window seconds after which it is
    #: suspended (its next AUTH fails; `user unsuspend` lifts it; 0 = never).
    suspend_after: int = 20
    suspend_window: int = 3600
    #: Seconds an allowed login links its user and client address to the credential
    #: that authenticated (the policy request names only the user).
    login_window: int = 3600
    #: Most policy connections at once (Postfix keeps one per smtpd process), and
    #: seconds one may stay silent or leave our replies unread.
    max_connections: int = 512
    idle_timeout: float = 300.0


@dataclass
class StateConfig:
    #: Where the sending counters, login links and brute-force brake counts live: "" =
    #: in this process (one host), or redis://HOST:PORT/DB, rediss://..., unix:///path
    #: (Redis or Valkey, shared by every MX host). When it does not answer, sending is
    #: deferred and the brake uses this host's counts (serve/decide/sharedbrake.py).
    url: str = ""
    #: Prefix of every key in Redis (several installations may share one server).
    prefix: str = "saslnetauth:"
    #: Seconds a Redis command may take before the request is deferred.
    timeout: float = 0.5


@dataclass
class LoggingConfig:
    #: debug, info, warning or error.
    level: str = "info"
    #: Also append log lines to this file ("" = standard error only).
    file: str = ""


@dataclass
class Config:
    #: SQLAlchemy URL of the database (env SASLNETAUTH_DATABASE_URL, option --database).
    database_url: str = DEFAULT_DATABASE_URL
    #: Compare user names in lower case (like Dovecot's default %Lu).
    lowercase_usernames: bool = True
    #: SQLite busy timeout / pool wait, seconds.
    database_timeout: float = 5.0
    #: Seconds a cached copy of the global networks is used before the database
    #: confirms it is current (inline, before the login is decided).
    global_cache_seconds: float = 1.0
    passwords: PasswordsConfig = field(default_factory=PasswordsConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    checkpassword: CheckpasswordConfig = field(default_factory=CheckpasswordConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    pam: PamConfig = field(default_factory=PamConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    geoip: GeoipConfig = field(default_factory=GeoipConfig)
    revoke: RevokeConfig = field(default_factory=RevokeConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    proxies: ProxiesConfig = field(default_factory=ProxiesConfig)
    sending: SendingConfig = field(default_factory=SendingConfig)
    state: StateConfig = field(default_factory=StateConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    #: The file this was loaded from, if any (not a key).
    source: Path | None = field(default=None, metadata={"internal": True})
