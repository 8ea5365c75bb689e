"""README quick start, command 1, run as written: install, init, serve."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.quickstart import quickstart

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quickstart_command_one_installs_and_serves(tmp_path: Path) -> None:
    """Command 1 on a clean copy of the repository: pip install, init, serve."""
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    work = tmp_path / "clone"
    for name in files:
        src = ROOT / name
        if src.is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, work / name)
    cmds = quickstart()
    assert "--listen unix:$PWD/auth-client" in cmds[0], "the quick start uses a UNIX socket"
    assert "inet:" not in cmds[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SASLNETAUTH_", "VIRTUAL_ENV"))}
    log = tmp_path / "cmd1.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["bash", "-c", cmds[0]],
            cwd=work,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 600
        while "ready:" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "command 1 did not start the server"
            time.sleep(0.5)
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(work / "auth-client"))
            greeting = s.recv(4096).decode()
        assert greeting.startswith("VERSION\t1\t2\nMECH\tPLAIN")
        assert oct((work / "saslnetauth.db").stat().st_mode & 0o777) == oct(0o600)
        for line in cmds[2:]:  # the follow-up commands: add a user, check a login
            r = subprocess.run(
                ["bash", "-c", line], cwd=work, env=env, capture_output=True, text=True, timeout=120
            )
            assert r.returncode == 0, (line, r.stdout, r.stderr)
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have exited: keep its error
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
