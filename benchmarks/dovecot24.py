"""Dovecot 2.4's live paths side by side, in one run, and the policy endpoint alone.

Logins go to Dovecot's own auth-client socket (the path IMAP, POP3 and
Postfix-through-Dovecot take), same users and hashes (``doveadm pw``), same
allowed network (127.0.0.2); every login is allowed (right password from
127.0.0.2):

(a) Dovecot 2.4.1 (Debian 13 chroot), passwd-file passdb with ``allow_nets``
    (the offline export's shape): the baseline;
(b) Dovecot 2.4.1 + the shipped Lua bridge -> ``saslnetauth serve`` (hash
    checked by saslnetauth);
(c) Dovecot 2.4.1 passwd-file (no allow_nets) + the policy endpoint
    (check_before_auth + report: two HTTP requests per login; hash checked by
    Dovecot);
(d) Dovecot 2.3 (host) + ``saslnetauth-checkpassword`` fast path -> serve.

All with ``auth_failure_delay = 0``, ``auth_cache_size = 0``, saslnetauth's
failure delay and penalty off. Then the policy endpoint alone: ``allow``
requests over keep-alive connections as fast as they go (1 and 20
connections), and paced at 1,000 requests/s (target p99 < 5 ms).

Usage::

    .venv/bin/python benchmarks/dovecot24.py             # ~3-4 minutes
    .venv/bin/python benchmarks/dovecot24.py --quick     # ~1 minute
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    ALLOWED_IP,
    BIN,
    DOVECOT_TUNING,
    BenchUser,
    banner,
    bench_dir,
    command_line,
    doveadm_pw,
    dovecot_passwd_line,
    exit_on_sigterm,
    machine_summary,
    make_database,
    ms,
    percentile,
    rate,
    saslnetauth_server,
    table,
)
from benchmarks.loadgen import Login, run_load
from tests.support.policy import POLICY_HEADER, POLICY_KEYS, policy_snippet

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "dovecot-examples"
SCHEMES = {"SHA512-CRYPT": ("SHA512-CRYPT", None), "ARGON2ID": ("ARGON2ID", None)}
TIMEOUT = 60.0


def users() -> dict[str, BenchUser]:
    out = {}
    for name, (scheme, cost) in SCHEMES.items():
        password = f"pw-{secrets.token_hex(4)}"
        out[name] = BenchUser(
            name=f"bench-{name.lower()}", password=password, hash=doveadm_pw(scheme, password, cost)
        )
    return out


def measure(target: str, user: BenchUser, conns: int, requests: int) -> list[str]:
    login = [Login(user.name, user.password, ALLOWED_IP, True, service="imap")]
    asyncio.run(run_load(target, login, connections=1, requests=2, timeout=TIMEOUT))  # warm up
    res = asyncio.run(
        run_load(target, login, connections=conns, requests=requests, timeout=TIMEOUT)
    )
    errors = f"{res.error_count}" + (f" {res.error_samples[:1]}" if res.error_count else "")
    return [rate(res.throughput), ms(res.p50), ms(res.p99), errors]


def lua_config(dc: object, sna: Path, script: Path) -> str:
    from tests.support.dovecot import Dovecot24Instance

    assert isinstance(dc, Dovecot24Instance)
    text = (EXAMPLES / "dovecot-2.4" / "auth-saslnetauth-lua.conf.ext").read_text()
    for shipped, here in (
        ("/etc/dovecot/saslnetauth.lua", dc.inside(script)),
        ("/run/saslnetauth/auth-client", dc.inside(sna / "serve.sock")),
        ("/run/saslnetauth/userdb", dc.inside(sna / "userdb.sock")),
    ):
        text = text.replace(shipped, here)
    return text


def side_by_side(args: argparse.Namespace, tmp: Path, chroot_tmp: Path) -> list[list[object]]:
    from tests.support.dovecot import (
        Dovecot24Instance,
        DovecotInstance,
        checkpassword_passdb,
        static_userdb,
    )

    us = users()
    db = make_database(tmp, list(us.values()))
    rows: list[list[object]] = []
    lines = [dovecot_passwd_line(u) for u in us.values()]
    plain_lines = [f"{u.name}:{u.hash}::::::" for u in us.values()]
    sna = chroot_tmp / "sna"
    sna.mkdir(mode=0o755)
    script = chroot_tmp / "saslnetauth.lua"
    shutil.copy(EXAMPLES / "dovecot-2.4" / "saslnetauth.lua", script)
    policy_port = _free_port()
    serve_keys = {
        "penalty_max": 0,
        "socket_mode": "0666",
        "userdb_listen": f"unix:{sna}/userdb.sock",
    }
    policy = (
        f'\n[policy]\nlisten = "inet:127.0.0.1:{policy_port}"\n{POLICY_KEYS}'
        "[report]\nrecord = false\n"
    )
    with saslnetauth_server(sna, db, serve=serve_keys, extra_config=policy) as srv:
        setups: list[tuple[str, DovecotInstance]] = []
        base24 = Dovecot24Instance(chroot_tmp / "a", passwd=lines, extra_config=DOVECOT_TUNING)
        setups.append(("2.4 passwd-file (allow_nets)", base24))
        lua24 = Dovecot24Instance(chroot_tmp / "b", extra_config=DOVECOT_TUNING)
        lua24.passdb, lua24.userdb = lua_config(lua24, sna, script), ""
        setups.append(("2.4 + Lua bridge", lua24))
        snippet = policy_snippet("2.4", policy_port)  # the shipped snippet, with the secret
        pol24 = Dovecot24Instance(
            chroot_tmp / "c", passwd=plain_lines, extra_config=DOVECOT_TUNING + snippet
        )
        setups.append(("2.4 passwd-file + policy", pol24))
        program = f"{BIN / 'saslnetauth-checkpassword'} --socket {srv.socket} --database {db}"
        cp23 = DovecotInstance(
            tmp / "d",
            passdb=checkpassword_passdb(program),
            userdb=static_userdb(tmp / "home"),
            extra_config=DOVECOT_TUNING,
        )
        setups.append(("2.3 + checkpassword fast path", cp23))
        for label, dc in setups:
            with dc:
                for scheme in args.schemes:
                    for conns in args.conns:
                        n = args.requests[scheme] * (2 if conns > 1 else 1)
                        row = measure(f"unix:{dc.auth_socket}", us[scheme], conns, n)
                        rows.append([label, scheme, conns, n, *row])
                        print("  ", rows[-1], flush=True)
        served = srv.log().count("auth ok")
        print(f"saslnetauth logged {served} 'auth ok' lines (b, c and d reach it)")
    return rows


def _free_port() -> int:
    from tests.support.serverproc import free_port

    return free_port()


async def _policy_client(
    port: int, n: int, interval: float | None, lat: list[float], bodies: list[bytes]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(n):
        if interval is not None:
            delay = start + i * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        body = bodies[i % len(bodies)]
        t0 = time.perf_counter()
        writer.write(
            b"POST /?command=allow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"{POLICY_HEADER}\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        answer = await reader.readexactly(length)
        lat.append(time.perf_counter() - t0)
        if b'"status": 0' not in answer:
            raise RuntimeError(f"unexpected answer {answer!r}")
    writer.close()


def policy_alone(args: argparse.Namespace, tmp: Path) -> list[list[object]]:
    us = {"u": BenchUser(name="policy-user", password="x", hash="{PLAIN}x")}
    db = make_database(tmp, list(us.values()), name="policy.db")
    port = _free_port()
    extra = f'\n[policy]\nlisten = "inet:127.0.0.1:{port}"\n{POLICY_KEYS}[report]\nrecord = false\n'
    body = json.dumps(
        {
            "device_id": "",
            "login": "policy-user",
            "protocol": "imap",
            "pwhash": "0a4",
            "remote": ALLOWED_IP,
            "session_id": "",
            "tls": False,
        }
    ).encode()
    rows: list[list[object]] = []
    with saslnetauth_server(tmp, db, extra_config=extra, name="policy"):

        async def run(
            conns: int, per_conn: int, interval: float | None
        ) -> tuple[float, list[float]]:
            lat: list[float] = []
            t0 = time.perf_counter()
            await asyncio.gather(
                *(_policy_client(port, per_conn, interval, lat, [body]) for _ in range(conns))
            )
            return time.perf_counter() - t0, sorted(lat)

        asyncio.run(run(1, 50, None))
        for conns in (1, 20):
            total = args.policy_requests
            wall, lat = asyncio.run(run(conns, total // conns, None))
            rows.append(
                [
                    f"max rate, {conns} conn",
                    len(lat),
                    rate(len(lat) / wall),
                    ms(percentile(lat, 50)),
                    ms(percentile(lat, 99)),
                    "",
                ]
            )
        # paced: 1,000 requests/s over 10 connections (100/s each)
        wall, lat = asyncio.run(run(10, args.paced_seconds * 100, 0.01))
        p99 = percentile(lat, 99)
        rows.append(
            [
                "paced 1000/s, 10 conns",
                len(lat),
                rate(len(lat) / wall),
                ms(percentile(lat, 50)),
                ms(p99),
                "MET" if p99 < 0.005 else "NOT MET",
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    args.schemes = list(SCHEMES)
    args.conns = [1, 20]
    scale = 0.25 if args.quick else 1.0
    args.requests = {"SHA512-CRYPT": int(400 * scale), "ARGON2ID": int(100 * scale)}
    args.policy_requests = int(10000 * scale)
    args.paced_seconds = 3 if args.quick else 10
    exit_on_sigterm()
    banner("Dovecot 2.4 live paths side by side; policy endpoint alone")
    print(f"machine: {machine_summary()}")
    print(f"command: {command_line()}")
    from tests.support.dovecot import Dovecot24Instance

    with bench_dir("sna-dc24-") as tmp:
        chroot_tmp = Dovecot24Instance.tmpdir("sna-dc24-")
        try:
            rows = side_by_side(args, tmp, chroot_tmp)
        finally:
            shutil.rmtree(chroot_tmp, ignore_errors=True)
        print(
            table(["setup", "scheme", "conns", "logins", "logins/s", "p50", "p99", "errors"], rows)
        )
        prow = policy_alone(args, tmp)
        print("policy endpoint alone (allow requests, keep-alive):")
        print(table(["load", "requests", "req/s", "p50", "p99", "p99 < 5 ms"], prow))
    return 0


if __name__ == "__main__":
    sys.exit(main())
