"""Do the hashes release the GIL?  Threads vs processes, measured (not assumed).

For each scheme, verifies N hashes on 1 thread, on `cores` threads and on
`cores` processes, and prints verifications per second. If threads scale
like processes, the server's thread pool uses every core for that scheme.

    .venv/bin/python benchmarks/gil.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

from saslnetauth.credentials.passwords import PasswordHasher, crypt_available

SCHEMES = {
    "SHA512-CRYPT": {"sha_crypt_rounds": 5000},
    "BLF-CRYPT": {"bcrypt_cost": 8},
    "ARGON2ID": {},
    "SSHA512": {},
}


def _work(scheme: str, stored: str, seconds: float) -> int:
    h = PasswordHasher(scheme, **SCHEMES[scheme])  # type: ignore[arg-type]
    parsed = h.parse(stored)
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        h.verify(b"benchmark password", parsed)
        n += 1
    return n


def rate(pool: Executor, workers: int, scheme: str, stored: str, seconds: float) -> float:
    futures = [pool.submit(_work, scheme, stored, seconds) for _ in range(workers)]
    return sum(f.result() for f in futures) / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    print(f"cores: {cores}; libcrypt crypt_rn: {'yes' if crypt_available() else 'no'}")
    print(
        f"{'scheme':<14}{'1 thread/s':>12}{f'{cores} threads/s':>14}{f'{cores} procs/s':>13}"
        f"{'threads/procs':>15}"
    )
    for scheme, kw in SCHEMES.items():
        stored = PasswordHasher(scheme, **kw).hash("benchmark password")  # type: ignore[arg-type]
        with ThreadPoolExecutor(cores) as tp, ProcessPoolExecutor(cores) as pp:
            rate(pp, cores, scheme, stored, 0.2)  # warm the processes up
            one = rate(tp, 1, scheme, stored, args.seconds)
            threads = rate(tp, cores, scheme, stored, args.seconds)
            procs = rate(pp, cores, scheme, stored, args.seconds)
        print(f"{scheme:<14}{one:>12.0f}{threads:>14.0f}{procs:>13.0f}{threads / procs:>15.2f}")


if __name__ == "__main__":
    main()
