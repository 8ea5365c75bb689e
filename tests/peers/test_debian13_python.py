"""The Debian 13 tier: the unit, database, process, CLI and transcript tests again,
under Debian 13's Python 3.13.

The suite itself runs on this machine's Python (Debian 12's 3.11). This test
runs the same five tiers (``tiers.DEBIAN13_TIERS``) inside the Debian 13 chroot of ``.ci/debian13``
with its Python 3.13, in a venv there with the dependencies from PyPI (kept
and reused while ``pyproject.toml`` is unchanged), and fails with the inner
run's output when any of them fails. Database servers on this machine's
loopback serve the inner run too; ``CI`` is passed in, so a missing peer in
there fails in CI as well. The static checks (ruff, mypy) are not repeated:
they do not depend on the Python that runs them. A second test runs
``saslnetauth serve`` itself under 3.13 behind Debian 13's Postfix and stops it. A third
runs the sending limits' Redis tests (``tests/peers/test_sending_redis.py``) under 3.13
against Debian 13's Valkey 8: a private ``valkey-server`` of the chroot per test
(``SASLNETAUTH_TEST_REDIS_SERVER``, tests/support/redisserver.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support import ALLOWED_IP, DENIED_IP, PostfixInstance
from tests.support.chrootvenv import chroot_command, in_chroot, venv
from tests.support.clitools import run
from tests.support.net import tail, wait_file_match
from tests.support.redisserver import ENV as REDIS_SERVER_ENV
from tests.support.roots import REPO, trixie
from tests.support.tiers import INNER_TIMEOUT, EarlyRun, early_run, run_debian13_tier

pytestmark = [pytest.mark.peer, pytest.mark.slow]

PW = "s3cret pw"
VALKEY_TESTS = "tests/peers/test_sending_redis.py"


@pytest.mark.timeout(3600)
def test_unit_cli_and_transcript_tiers_pass_under_python_3_13(tmp_path: Path) -> None:
    run = early_run()  # started beside the rest of the suite at collection (tests/support/tiers.py)
    if run is None:  # run alone, or SASLNETAUTH_TIER_EARLY=0: run it now
        run = EarlyRun(log=tmp_path / "debian13.log")
        run_debian13_tier(run)
    run.wait(INNER_TIMEOUT + 900)
    output = run.log.read_text(errors="replace")
    print(
        f"Debian 13 tier: venv {'built' if run.venv_built else 'reused'} in "
        f"{run.venv_seconds:.0f} s, tests in {run.seconds:.0f} s; {tail(output, 1)}"
    )
    assert any(line.startswith("3.13.") for line in output.splitlines()), tail(output, 20)
    assert run.status == 0, f"inner pytest exited {run.status}:\n{tail(output, 150)}"


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.timeout(600)
def test_serve_under_python_3_13_stops_while_postfix_holds_its_auth_connection(
    tmp_path: Path,
) -> None:
    """The measured failure: under 3.13, SIGTERM did not stop ``saslnetauth serve`` while
    an smtpd process kept its auth connection (Postfix reuses one per process), so
    every ``systemctl stop`` on Debian 13 ended in SIGKILL. Debian 13's Postfix against
    saslnetauth running under Debian 13's Python, both in the chroot."""
    root = trixie()
    env = venv(root, tmp_path / "venv.log")
    with root.tmpdir("sna-stop-") as d:
        db = f"sqlite:///{d}/s.db"
        assert run("init", db=db).code == 0
        r = run("user", "add", "alice", "--password-stdin", "--net", ALLOWED_IP, db=db, stdin=PW)
        assert r.code == 0, r.err
        (d / "serve.toml").write_text('[serve]\nsocket_mode = "0666"\n')
        sock = d / "auth-client"
        program = Path(env.python).parent / "saslnetauth"
        serve = (
            f"exec {program} --database sqlite:///{root.inside(d)}/s.db "
            f"--config {root.inside(d)}/serve.toml serve --failure-delay 0 "
            f"--listen unix:{root.inside(sock)}"
        )
        log = d / "serve.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                chroot_command(root, serve), stdout=out, stderr=subprocess.STDOUT
            )
        try:
            wait_file_match(log, "ready:", timeout=60)
            with PostfixInstance(d / "postfix", root.inside(sock), root=root) as pf:
                idle_fds = _fds(proc.pid)
                assert pf.login(ALLOWED_IP, "alice", PW) == (235, "2.7.0 Authentication successful")
                assert pf.login(DENIED_IP, "alice", PW)[0] == 535
                # the smtpd processes are idle now, each still connected to the server
                assert _fds(proc.pid) > idle_fds
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(30) == 0, log.read_text()
            text = log.read_text()
            assert "stopped:" in text and "Traceback" not in text
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.timeout(900)
def test_sending_limits_against_valkey_under_python_3_13(tmp_path: Path) -> None:
    """Debian 13 ships Valkey 8, not Redis: the shared sending state's Lua script, key
    expiry and reconnection after an outage, against it. Every test of the file must
    pass: a skip in there (no valkey-server) fails here too."""
    root = trixie()
    valkey = root.require_binary("valkey-server")
    env = venv(root, tmp_path / "venv.log")
    log = tmp_path / "valkey.log"
    script = (
        f"cd {REPO} && {valkey} --version && {REDIS_SERVER_ENV}={valkey} "
        f"exec {env.python} -m pytest -q -ra -p no:cacheprovider {VALKEY_TESTS}"
    )
    status = in_chroot(root, script, 600, log)
    output = log.read_text(errors="replace")
    assert "Valkey server v=8." in output, tail(output, 20)
    assert status == 0, f"inner pytest exited {status}:\n{tail(output, 80)}"
    summary = tail(output, 1)
    assert " passed" in summary and "skipped" not in summary, summary
