"""The sending policy server (issue 24): decisions per second and p50/p99 latency at
1, 20 and 200 concurrent Postfix-like clients, embedded state and Redis.

Each client is one long-lived policy connection (like one smtpd process) sending
``protocol_state=RCPT`` requests of authenticated users, one at a time, to
``saslnetauth serve``'s ``[sending] listen`` socket. Limits are high enough that
every answer is DUNNO: the figure is the cost of a full check-and-add (four
counters per request). The Redis rows use 127.0.0.1:6379 with a fresh key
prefix. Comparisons with policyd-rate-limit and postfwd are not in this script yet.

    .venv/bin/python benchmarks/sending.py [--seconds 5] [--clients 1,20,200]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    banner,
    bench_dir,
    command_line,
    machine_summary,
    ms,
    percentile,
    saslnetauth_server,
    table,
)

USERS = 100
REDIS = "redis://127.0.0.1:6379/0"


def _request(user: str, n: int) -> bytes:
    return (
        "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
        f"client_address=127.0.0.2\nsasl_method=PLAIN\nsasl_username={user}\n"
        f"recipient=r{n}@example.net\nrecipient_count=0\nsize=0\ninstance={user}.{n}\n\n"
    ).encode()


async def _client(path: Path, index: int, until: float, lat: list[float]) -> int:
    reader, writer = await asyncio.open_unix_connection(str(path))
    errors = 0
    n = 0
    try:
        while time.monotonic() < until:
            n += 1
            start = time.perf_counter()
            writer.write(_request(f"u{(index + n) % USERS}", n))
            reply = await reader.readuntil(b"\n\n")
            lat.append(time.perf_counter() - start)
            if reply != b"action=DUNNO\n\n":
                errors += 1
    finally:
        writer.close()
    return errors


async def _load(path: Path, clients: int, seconds: float) -> tuple[float, list[float], int]:
    lat: list[float] = []
    start = time.monotonic()
    until = start + seconds
    errors = await asyncio.gather(*(_client(path, i, until, lat) for i in range(clients)))
    return len(lat) / (time.monotonic() - start), sorted(lat), sum(errors)


def _database(tmp: Path) -> str:
    """USERS users, written in-process (the CLI would take a process per user)."""
    from saslnetauth.store import SqlStore, migrate

    url = f"sqlite:///{tmp / 'send.db'}"
    store = SqlStore(url)
    migrate.upgrade(store)
    for i in range(USERS):
        store.add_user(f"u{i}", "{PLAIN}pw")
    store.close()
    return url


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", default="1,20,200")
    ap.add_argument("--no-redis", action="store_true", help="only the embedded state")
    args = ap.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    banner("sending policy: decisions/s and latency")
    print(machine_summary())
    rows: list[list[object]] = []
    failed = False
    states = [("embedded", "")] + ([] if args.no_redis else [("redis", REDIS)])
    with bench_dir("sna-bench-send-") as tmp:
        db = _database(tmp)
        for name, url in states:
            policy = tmp / f"policy-{name}"
            extra = (
                f'[sending]\nlisten = "unix:{policy}"\nmessages_per_hour = 0\n'
                "recipients_per_hour = 0\nmessages_per_day = 0\nrecipients_per_day = 0\n"
                f'[state]\nurl = "{url}"\nprefix = "bench{uuid.uuid4().hex[:8]}:"\n'
            )
            with saslnetauth_server(tmp, db, name=f"serve-{name}", extra_config=extra):
                for clients in counts:
                    per_s, lat, errors = asyncio.run(_load(policy, clients, args.seconds))
                    failed |= errors > 0
                    rows.append(
                        [name, clients, f"{per_s:,.0f}", ms(percentile(lat, 50)),
                         ms(percentile(lat, 99)), errors]
                    )  # fmt: skip
    print(table(["state", "clients", "decisions/s", "p50", "p99", "errors"], rows))
    print("\n" + command_line())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
