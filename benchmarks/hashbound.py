"""The hash-bound limit for benchmarks/vs_dovecot.py (``--cores``), and its
app-password workload.

Hash-bound limit: a server that did nothing but verify hashes, on every core,
would answer ``cores x single-core hash rate`` logins per second. The
single-core rate is measured here, in this process, one thread, with the same
hasher the decision workers use (saslnetauth.credentials.passwords) on the
benchmark's own hashes, before the servers start. Throughput divided by the
limit says how much of the machine's hashing capacity a server turns into
logins (1.0 = no overhead at all). For PLAIN and app passwords the "hash" costs
microseconds, so the limit means nothing there and is not printed.

App-password workload: the saslnetauth user has a slow main password and an
app password (``user app-password add``, one keyed SHA-256 to check, allowed
from the benchmark's network), and logs in with the app password's token.
Dovecot 2.3 has no per-device credentials in passwd-file; the closest equivalent
of "a cheap secret checked per login" is the same token as a ``{PLAIN}``
password, so the Dovecot side is the same user with the token as its PLAIN
password: a constant-time compare, the cheapest check Dovecot can do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from benchmarks.common import ALLOWED_IP, BenchUser, cli, doveadm_pw, rate, table

__all__ = ["APP", "CHEAP", "add_app_password", "bound_rows", "single_core_rates"]

#: The app-password workload's name in the scheme list.
APP = "APP-PASSWORD"
#: Workloads whose verification costs microseconds (no hash-bound limit).
CHEAP = frozenset({"PLAIN", APP})
#: Seconds of verifying per scheme for the single-core rate.
MEASURE_SECONDS = 1.0


def add_app_password(db: str, user: BenchUser) -> BenchUser:
    """Give ``user`` (already in ``db``) an app password allowed from the benchmark's
    network; the user as both servers then log in: the token as the password, and
    for Dovecot the token as a PLAIN hash."""
    out = cli(
        "user", "app-password", "add", user.name, "--label", "bench", "--net", ALLOWED_IP,
        "--json", db=db,
    )  # fmt: skip
    token = str(json.loads(out)["password"])
    return BenchUser(user.name, token, doveadm_pw("PLAIN", token, None), user.nets)


def single_core_rates(users: dict[str, BenchUser]) -> dict[str, float]:
    """Verifications per second on one core, per slow scheme of ``users``."""
    from saslnetauth.credentials.passwords import PasswordHasher

    hasher = PasswordHasher()
    rates: dict[str, float] = {}
    for scheme, user in users.items():
        if scheme in CHEAP or user.hash is None:
            continue
        parsed = hasher.parse(user.hash)
        n, started = 0, time.perf_counter()
        while n < 2 or time.perf_counter() - started < MEASURE_SECONDS:
            if not hasher.verify(user.password, parsed):
                raise RuntimeError(f"{scheme}: the benchmark's hash does not verify")
            n += 1
        rates[scheme] = n / (time.perf_counter() - started)
    return rates


def bound_rows(
    cells: Sequence[tuple[str, str, int, float, float]], rates: dict[str, float], cores: int
) -> str:
    """The table of (scheme, kind, conns, Dovecot req/s, saslnetauth req/s) against the
    hash-bound limit."""
    rows = []
    for scheme, kind, conns, d, s in cells:
        one = rates.get(scheme)
        if one is None or kind != "allowed":
            continue
        limit = cores * one
        row: list[object] = [f"{scheme} {kind}", conns, rate(one), rate(limit)]
        row += [rate(d), f"{d / limit:.2f}", rate(s), f"{s / limit:.2f}"]
        rows.append(row)
    headers = ["workload", "conns", "1-core hash/s", f"limit ({cores} cores)"]
    headers += ["dovecot req/s", "D/limit", "saslnetauth req/s", "S/limit"]
    return table(headers, rows)
