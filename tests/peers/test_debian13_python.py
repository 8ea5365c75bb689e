"""The Debian 13 tier: the unit, CLI and transcript tests again, under Debian 13's Python 3.13.

The suite itself runs on this machine's Python (Debian 12's 3.11). This test
runs the same three tiers inside the Debian 13 chroot of ``.ci/debian13``
with its Python 3.13, in a venv there with the dependencies from PyPI (kept
and reused while ``pyproject.toml`` is unchanged), and fails with the inner
run's output when any of them fails. Database servers on this machine's
loopback serve the inner run too; ``CI`` is passed in, so a missing peer in
there fails in CI as well. The static checks (ruff, mypy) are not repeated:
they do not depend on the Python that runs them.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import pytest

from tests.support.chrootvenv import in_chroot, venv
from tests.support.net import tail
from tests.support.roots import REPO, trixie

pytestmark = [pytest.mark.peer, pytest.mark.slow]

TIERS = ["tests/unit", "tests/cli", "tests/transcript"]
NOT_REPEATED = ["tests/unit/test_lint.py"]


@pytest.mark.timeout(3600)
def test_unit_cli_and_transcript_tiers_pass_under_python_3_13(tmp_path: Path) -> None:
    root = trixie()
    log = tmp_path / "debian13.log"
    env = venv(root, log)
    args = ["-q", "-ra", "-p", "no:cacheprovider", *TIERS]
    args += [f"--ignore={p}" for p in NOT_REPEATED]
    script = (
        f"cd {shlex.quote(str(REPO))} && {env.python} -c 'import sys; print(sys.version)' && "
        f"exec {env.python} -m pytest {' '.join(shlex.quote(a) for a in args)}"
    )
    started = time.monotonic()
    status = in_chroot(root, script, 3000, log)
    seconds = time.monotonic() - started
    output = log.read_text(errors="replace")
    print(
        f"Debian 13 tier: venv {'built' if env.built else 'reused'} in {env.seconds:.0f} s, "
        f"tests in {seconds:.0f} s; {tail(output, 1)}"
    )
    assert any(line.startswith("3.13.") for line in output.splitlines()), tail(output, 20)
    assert status == 0, f"inner pytest exited {status}:\n{tail(output, 150)}"
