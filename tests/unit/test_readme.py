"""The README's quick start works as written, and CI runs its test command."""

from __future__ import annotations

from pathlib import Path

from tests.support.quickstart import quickstart

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_has_two_commands_and_ci_runs_the_test_command() -> None:
    cmds = quickstart()
    install_and_serve, tests = cmds[0], cmds[1]
    assert "serve" in install_and_serve and "sqlite" in install_and_serve
    test_cmd = tests.split("&&")[-1].strip()
    assert test_cmd == ".venv/bin/python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci, "CI must run the README's test command"
    assert tests.split("&&")[0].strip() == "bash .ci/install"
    assert "bash .ci/install" in ci
