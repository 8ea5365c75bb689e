"""The suite's tiers: their times, and the Debian 13 tier started early.

Every test file lives in one tier folder (``tests/unit``, ``tests/db``,
``tests/process``, ``tests/lint``, ``tests/cli``, ``tests/transcript``,
``tests/peers``, ``tests/package``; docs/testing.md); :class:`TierClock` adds up the
setup, call and teardown time of each tier's tests, and the run's closing
summary prints them (so a CI log says where its time went).

The Debian 13 tier (``tests/peers/test_debian13_python.py``) runs the unit,
database, process, CLI and transcript tiers again inside the Debian 13 chroot: one inner pytest
run of several minutes, mostly waiting on its own servers. When the test is
selected, :func:`start_debian13_tier` starts that inner run as soon as
collection is done, beside the rest of the suite, instead of when the test's
turn comes; the test then waits for it and judges it exactly as before (its
exit status and its output). ``SASLNETAUTH_TIER_EARLY=0`` runs it in turn.

With pytest-xdist, opt-in (``-n 3 --dist loadfile --no-loadscope-reorder``;
docs/testing.md), the workers deal out whole files in the order :func:`dealing_rank` gives: the
Debian 13 tier's file first, so one worker runs the inner run (in the test
itself) while the others take the rest, then the tiers longest first, so no
long file is left for the end. No worker starts the inner run at collection.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEBIAN13_TIERS",
    "EarlyRun",
    "TierClock",
    "dealing_rank",
    "early_run",
    "on_worker",
    "run_debian13_tier",
    "start_debian13_tier",
    "stop",
]

#: The tiers the Debian 13 test runs again under Python 3.13.
#: (Not tests/lint: the static checks do not depend on the Python that runs them.)
DEBIAN13_TIERS = ["tests/unit", "tests/db", "tests/process", "tests/cli", "tests/transcript"]
#: The inner run's bound (seconds), as the test's own timeout.
INNER_TIMEOUT = 3000
EARLY_FILE = "tests/peers/test_debian13_python.py"
EARLY_TEST = f"{EARLY_FILE}::test_unit_cli_and_transcript_tiers_pass"
#: Tiers in the order xdist's workers take them: the longest first.
DEALING_ORDER = [
    "tests/package/",
    "tests/peers/",
    "tests/transcript/",
    "tests/cli/",
    "tests/db/",
    "tests/process/",
    "tests/lint/",
    "tests/unit/",
]


def on_worker(config: object) -> bool:
    """True in an xdist worker (the controller and a run in one process collect too)."""
    return hasattr(config, "workerinput")


def dealing_rank(nodeid: str) -> int:
    """Where a test's file goes in the order xdist's workers take them."""
    if nodeid.startswith(EARLY_FILE):
        return -1
    for rank, tier in enumerate(DEALING_ORDER):
        if nodeid.startswith(tier):
            return rank
    return len(DEALING_ORDER)


@dataclass
class TierClock:
    """Seconds spent per tier folder, from pytest's reports."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    tests: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: seconds per file (set-up, calls and tear-down of its tests)
    files: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, nodeid: str, when: str, duration: float) -> None:
        parts = nodeid.split("/")
        tier = parts[1] if len(parts) > 2 and parts[0] == "tests" else "other"
        self.seconds[tier] += duration
        self.files[nodeid.split("::")[0]] += duration
        if when == "call":
            self.tests[tier] += 1

    def lines(self, wall: float) -> list[str]:
        rows = [
            f"{tier:<11} {self.tests[tier]:>5} tests {self.seconds[tier]:>8.1f} s"
            for tier in sorted(self.seconds, key=lambda t: -self.seconds[t])
        ]
        return [*rows, f"{'wall':<11} {'':>11} {wall:>8.1f} s (tiers may overlap)"]

    def slowest_files(self, count: int = 15) -> list[str]:
        top = sorted(self.files.items(), key=lambda kv: -kv[1])[:count]
        return [f"{seconds:>8.1f} s  {name}" for name, seconds in top]


@dataclass
class EarlyRun:
    """The Debian 13 inner run, started in a thread; :meth:`wait` gives its outcome."""

    log: Path
    started: float = field(default_factory=time.monotonic)
    status: int | None = None
    venv_built: bool = False
    venv_seconds: float = 0.0
    seconds: float = 0.0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    proc: subprocess.Popen[bytes] | None = None

    def wait(self, timeout: float) -> None:
        if not self.done.wait(timeout):
            raise TimeoutError(f"the Debian 13 tier did not finish in {timeout:g} s")
        if self.error is not None:
            raise self.error


_EARLY: EarlyRun | None = None


def early_run() -> EarlyRun | None:
    """The inner run started at collection, if any."""
    return _EARLY


def debian13_script(python: str, repo: Path) -> str:
    """The shell script that runs the repeated tiers with the chroot venv's ``python``."""
    args = ["-q", "-ra", "-p", "no:cacheprovider", *DEBIAN13_TIERS]
    return (
        f"cd {shlex.quote(str(repo))} && {python} -c 'import sys; print(sys.version)' && "
        f"exec {python} -m pytest {' '.join(shlex.quote(a) for a in args)}"
    )


def run_debian13_tier(run: EarlyRun) -> None:
    """Build or reuse the chroot venv, then run the tiers; fills ``run``."""
    from tests.support.chrootvenv import chroot_command, venv
    from tests.support.roots import REPO, trixie

    try:
        root = trixie()
        env = venv(root, run.log)
        run.venv_built, run.venv_seconds = env.built, env.seconds
        started = time.monotonic()
        with open(run.log, "ab") as out:
            run.proc = subprocess.Popen(
                chroot_command(root, debian13_script(env.python, REPO)),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                run.status = run.proc.wait(INNER_TIMEOUT)
            except subprocess.TimeoutExpired:
                stop(run)
                raise
        run.seconds = time.monotonic() - started
    except BaseException as exc:  # handed to the test, which reports it (skip, fail or error)
        run.error = exc
    finally:
        run.done.set()


def stop(run: EarlyRun | None) -> None:
    """End the inner run's processes if they still run (the suite stopped early)."""
    if run is not None and run.proc is not None and run.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.proc.pid, signal.SIGKILL)
        run.proc.wait()


def start_debian13_tier(selected: list[str], tmp: Path) -> EarlyRun | None:
    """Start the inner run now when its test is among ``selected`` node ids."""
    global _EARLY
    if os.environ.get("SASLNETAUTH_TIER_EARLY", "1") == "0":
        return None
    if not any(n.startswith(EARLY_TEST) for n in selected):
        return None
    tmp.mkdir(parents=True, exist_ok=True)
    _EARLY = EarlyRun(log=tmp / "debian13.log")
    threading.Thread(target=run_debian13_tier, args=(_EARLY,), daemon=True).start()
    return _EARLY
