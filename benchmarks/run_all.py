"""Run every benchmark in turn and print (and save) all their tables.

Each script runs as its own process, so one that fails does not stop the
others; the exit status is 1 if any failed. The output goes to the
terminal and to ``--output`` (default ``benchmarks/results/<timestamp>.txt``).

Usage::

    .venv/bin/python benchmarks/run_all.py            # about 20 minutes
    .venv/bin/python benchmarks/run_all.py --quick    # about 5 minutes
    .venv/bin/python benchmarks/run_all.py --only vs_dovecot,soak
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: name -> (full arguments, --quick arguments)
SCRIPTS: dict[str, tuple[list[str], list[str]]] = {
    "netrules_100k": ([], ["--lookups", "5000"]),
    "geoip": ([], ["--networks", "50000", "--lookups", "20000"]),
    "checkpassword": ([], ["--quick"]),
    "cli_startup": ([], ["--quick"]),
    "oracle": ([], ["--tries", "50"]),
    "vs_dovecot": ([], ["--quick"]),
    "soak": ([], ["--seconds", "30"]),
    "flood": ([], ["--quick"]),
    "profile_serve": ([], ["--seconds", "5", "--workers", "1,4", "--sweep-seconds", "3"]),
    "record_overhead": (["--rounds", "5", "--seconds", "12"], ["--rounds", "2", "--seconds", "4"]),
    "gil": ([], ["--seconds", "1"]),
    "import_100k": ([], []),
    "dovecot24": ([], ["--quick"]),
    "app_passwords": ([], ["--logins", "6", "--fast-logins", "50"]),
    "sending": ([], ["--quick"]),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short versions of every benchmark")
    ap.add_argument("--only", help="comma-separated subset of: " + ", ".join(SCRIPTS))
    ap.add_argument("--output", type=Path, help="also write everything here")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(SCRIPTS)
    for name in names:
        if name not in SCRIPTS:
            ap.error(f"unknown benchmark {name}")
    output = args.output or HERE / "results" / time.strftime("%Y%m%d-%H%M%S.txt")
    output.parent.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    t_all = time.monotonic()
    current: subprocess.Popen[str] | None = None

    def stop(*_: object) -> None:
        if current is not None and current.poll() is None:
            current.send_signal(signal.SIGTERM)  # the script stops its own servers
        sys.exit(143)

    signal.signal(signal.SIGTERM, stop)
    with open(output, "w") as out:

        def emit(text: str) -> None:
            sys.stdout.write(text)
            sys.stdout.flush()
            out.write(text)
            out.flush()

        emit(f"# {shlex.join([sys.executable, *sys.argv])}\n# {time.ctime()}\n")
        for name in names:
            full, quick = SCRIPTS[name]
            cmd = [sys.executable, str(HERE / f"{name}.py"), *(quick if args.quick else full)]
            emit(f"\n##### {name}: {shlex.join(cmd)}\n")
            t0 = time.monotonic()
            current = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={k: v for k, v in os.environ.items() if not k.startswith("SASLNETAUTH_")},
            )
            assert current.stdout is not None
            for line in current.stdout:
                emit(line)
            code = current.wait()
            emit(f"##### {name}: exit {code} after {time.monotonic() - t0:.0f} s\n")
            if code != 0:
                failed.append(name)
        emit(
            f"\nall done in {time.monotonic() - t_all:.0f} s; "
            f"failed: {', '.join(failed) or 'none'}; output saved to {output}\n"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
