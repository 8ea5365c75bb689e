"""Time ``saslnetauth import`` of many users (default 100,000) through the real CLI.

Usage::

    .venv/bin/python benchmarks/import_100k.py [--users N] [--format passwd-file|csv]
                                                [--database URL]

Without ``--database`` a fresh SQLite file in a temporary directory is
used. The script writes a user file (hashes cycled from a small pool of
real ARGON2ID, SHA512-CRYPT, BLF-CRYPT and SSHA512 hashes, one to three
networks per user), then runs, each time as a new ``saslnetauth``
process, timed with a wall clock:

1. ``import --dry-run`` on the empty database (parse and plan only),
2. the first import (every user added),
3. the same import again (every user unchanged),
4. an import where every tenth user changed (password or networks).

and prints seconds and users per second for each. Timing goals live here,
not in the test suite (tests/cli/test_import.py checks the count only).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from saslnetauth.credentials.passwords import PasswordHasher  # noqa: E402


def hash_pool() -> list[str]:
    hasher = PasswordHasher()
    pool = []
    for i in range(4):
        for scheme in ("ARGON2ID", "SHA512-CRYPT", "BLF-CRYPT", "SSHA512"):
            pool.append(hasher.hash(f"password {i}", scheme))
    return pool


def networks(i: int) -> list[str]:
    nets = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"]
    if i % 2:
        nets.append(f"2001:db8:{i & 0xFFFF:x}::/48")
    if i % 5 == 0:
        nets.append("local")
    return nets


def write_file(path: Path, fmt: str, users: int, pool: list[str], generation: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        if fmt == "csv":
            writer.writerow(["name", "password_hash", "networks", "enabled"])
        for i in range(users):
            changed = generation and i % 10 == 0
            phash = pool[(i + changed) % len(pool)]
            nets = networks(i + (users if changed and i % 20 == 0 else 0))
            name = f"user{i:06d}@example.org"
            if fmt == "csv":
                writer.writerow([name, phash, " ".join(nets), "yes"])  # quotes ARGON2's commas
            else:
                fh.write(f"{name}:{phash}::::::allow_nets={','.join(nets)}\n")


def timed(*args: str, db: str) -> float:
    cmd = [str(BIN / "saslnetauth"), "--database", db, *args]
    start = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if p.returncode != 0:
        sys.exit(f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout}{p.stderr}")
    print(f"    {p.stdout.strip().splitlines()[0]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--format", choices=("passwd-file", "csv"), default="passwd-file")
    ap.add_argument("--database", help="SQLAlchemy URL of an EMPTY, initialised database")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = opts.database or f"sqlite:///{tmp}/bench.db"
        if not opts.database:
            subprocess.run([str(BIN / "saslnetauth"), "--database", db, "init"], check=True)
        pool = hash_pool()
        src = Path(tmp) / f"users.{opts.format}"
        write_file(src, opts.format, opts.users, pool, 0)
        print(f"{opts.users} users, {opts.format}, {db.split(':', 1)[0]}")
        runs = [("dry run (empty database)", ["--dry-run"], 0)]
        runs += [("first import (all added)", [], 0), ("re-import (all unchanged)", [], 0)]
        runs += [("import with 10% changed", [], 1)]
        for label, extra, generation in runs:
            write_file(src, opts.format, opts.users, pool, generation)
            took = timed("import", opts.format, str(src), *extra, db=db)
            print(f"  {label:28s} {took:7.2f} s  {opts.users / took:10,.0f} users/s")


if __name__ == "__main__":
    main()
