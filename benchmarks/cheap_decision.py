"""The engine's cheap decision alone, in-process: CPU per ``decide_if_cheap``.

Issue 26. One ``{PLAIN}`` user (``--app``: its app password) on a SQLite
file, an allowed login, the server's log line (``setup_logging``, written to /dev/null) and the
new-location memory switched on (``[alerts]`` defaults, no GeoIP): what the
classifier thread spends on one cheap login, without the protocol, the event
loop or the thread hand-offs. Prints the median, min and max of ``--rounds``
rounds of ``--logins`` decisions (process CPU time per decision);
``--profile`` adds a cProfile of one more round.

Another checkout as "before": ``PYTHONPATH=/path/to/checkout .venv/bin/python
benchmarks/cheap_decision.py`` (the checkout's ``saslnetauth`` is imported
first), alternating with this one.

Usage::

    .venv/bin/python benchmarks/cheap_decision.py [--logins 3000] [--rounds 5] [--profile] [--app]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from benchmarks.common import bench_dir
from saslnetauth.credentials.apptokens import new_token
from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.policy.engine import DecisionEngine
from saslnetauth.policy.locations import KINDS
from saslnetauth.policy.login import Login
from saslnetauth.policy.rules.netrules import NetworkRule
from saslnetauth.runtime import setup_logging
from saslnetauth.settings import Config
from saslnetauth.store import SqlStore
from saslnetauth.store.locations import LocationMemory
from saslnetauth.store.migrate import upgrade


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logins", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--app", action="store_true", help="log in with an app password")
    args = ap.parse_args()
    with bench_dir() as tmp, open("/dev/null", "w") as devnull:
        store = SqlStore(f"sqlite:///{tmp}/bench.db")
        upgrade(store)
        store.add_user("alice", "{PLAIN}secret", networks=[NetworkRule.parse("192.0.2.0/24")])
        password = "secret"
        if args.app:  # a user without one reads no app passwords
            phone = [NetworkRule.parse("192.0.2.0/24", scope="app password phone")]
            password = store.add_app_password("alice", "phone", new_token, networks=phone)
        setup_logging(Config(), stream=devnull, level="INFO")
        engine = DecisionEngine(store, PasswordHasher("ARGON2ID"))
        memory = LocationMemory(store, KINDS, memory_days=90, max_per_user=200)
        engine.note_place = memory.note
        login = Login.of("alice", password, "192.0.2.9", "smtp")
        try:
            for _ in range(200):  # warm up; the place is written
                assert engine.decide_if_cheap(login, []).ok
            memory.flush()

            def one_round() -> float:
                started = time.process_time()
                for _ in range(args.logins):
                    engine.decide_if_cheap(login, [])
                return (time.process_time() - started) / args.logins * 1e6

            runs = sorted(one_round() for _ in range(args.rounds))
            what = "app password" if args.app else "PLAIN"
            print(
                f"decide_if_cheap, {what}, allowed: median {statistics.median(runs):.1f} us CPU"
                f" (min {runs[0]:.1f}, max {runs[-1]:.1f}; {args.rounds} x {args.logins})"
            )
            if args.profile:
                prof = cProfile.Profile()
                prof.runcall(one_round)
                pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        finally:
            memory.close()
            store.close()


if __name__ == "__main__":
    main()
