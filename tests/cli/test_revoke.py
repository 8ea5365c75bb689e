"""The command line runs the [revoke] command after each revocation (issue 25, item 4):
app-password del, disable, passwd, del, net del, and `user kick` by hand; never with a
password in its arguments or environment."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.support.clitools import run

PW = "n0t in any command"
RECORD = (
    "import json, os, sys; "
    "open(sys.argv[1], 'a').write(json.dumps([sys.argv[2:], "
    "{k: v for k, v in os.environ.items() if k.startswith('SASLNETAUTH_')}]) + '\\n')"
)


class Cli:
    def __init__(self, db: str, cfg: Path, out: Path) -> None:
        self.db, self.cfg, self.out = db, cfg, out

    def __call__(self, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
        r = run(*args, db=self.db, stdin=stdin, env={"SASLNETAUTH_CONFIG": str(self.cfg)})
        return r.code, r.out, r.err

    def runs(self) -> list[tuple[list[str], dict[str, str]]]:
        if not self.out.exists():
            return []
        return [tuple(json.loads(line)) for line in self.out.read_text().splitlines()]  # type: ignore[misc]


def _config(tmp_path: Path, db: str, command: list[str]) -> Path:
    cfg = tmp_path / "saslnetauth.toml"
    cfg.write_text(f'database_url = "{db}"\n[revoke]\ncommand = {json.dumps(command)}\n')
    cfg.chmod(0o600)
    return cfg


@pytest.fixture
def cli(sqlite_url: str, tmp_path: Path) -> Cli:
    out = tmp_path / "ran"
    command = [sys.executable, "-c", RECORD, str(out), "{user}", "{network}", "{credential}"]
    c = Cli(sqlite_url, _config(tmp_path, sqlite_url, command), out)
    assert c("init")[0] == 0
    code, _, err = c("user", "add", "Alice", "--password-stdin", "--net", "any", stdin=PW + "\n")
    assert code == 0, err
    return c


def test_each_revocation_runs_the_command_once(cli: Cli) -> None:
    code, out, err = cli("user", "app-password", "add", "alice", "--label", "phone", "--json")
    assert code == 0, err
    token = json.loads(out)["password"]
    assert cli("user", "net", "add", "alice", "192.0.2.0/24")[0] == 0
    assert cli.runs() == []  # adding revokes nothing
    steps = [
        (("user", "app-password", "del", "ALICE", "phone"), None, "app_password_deleted"),
        (("user", "net", "del", "alice", "192.0.2.0/24"), None, "network_removed"),
        (("user", "passwd", "alice", "--password-stdin"), "n3w pw\n", "password_changed"),
        (("user", "disable", "alice"), None, "user_disabled"),
        (("user", "del", "alice"), None, "user_deleted"),
    ]
    for args, stdin, _ in steps:
        code, _, err = cli(*args, stdin=stdin)
        assert code == 0, err
        assert "saslnetauth: sessions of alice" in err and "ended" in err, err
    runs = cli.runs()
    assert [env["SASLNETAUTH_EVENT"] for _, env in runs] == [s[2] for s in steps]
    assert [argv for argv, _ in runs] == [
        ["alice", "phone"],
        ["alice", "192.0.2.0/24"],
        ["alice"],
        ["alice"],
        ["alice"],
    ]
    assert runs[0][1]["SASLNETAUTH_CREDENTIAL"] == "phone"
    text = cli.out.read_text()
    for secret in (PW, "n3w pw", token):
        assert secret not in text


def test_user_kick_by_hand(cli: Cli) -> None:
    code, _, err = cli("user", "kick", "ALICE", "--app-password", "phone")
    assert code == 0, err
    assert cli.runs() == [
        (
            ["alice", "phone"],
            {
                "SASLNETAUTH_USER": "alice",
                "SASLNETAUTH_EVENT": "kick",
                "SASLNETAUTH_CREDENTIAL": "phone",
                "SASLNETAUTH_NETWORK": "",
            },
        )
    ]


def test_user_kick_fails_without_a_command_or_when_it_fails(
    sqlite_url: str, tmp_path: Path
) -> None:
    cli = Cli(sqlite_url, _config(tmp_path, sqlite_url, []), tmp_path / "ran")
    assert cli("init")[0] == 0
    code, _, err = cli("user", "kick", "alice")
    assert code == 1
    assert "no [revoke] command configured" in err
    # no command: a revocation says nothing about sessions
    assert cli("user", "add", "bob", "--no-password")[0] == 0
    code, _, err = cli("user", "disable", "bob")
    assert code == 0 and err == "", err
    failing = [sys.executable, "-c", "import sys; sys.exit('no anvil socket')", "{user}"]
    cli.cfg = _config(tmp_path, sqlite_url, failing)
    code, _, err = cli("user", "kick", "bob")
    assert code == 1
    assert "ending the sessions of bob failed" in err and "exit 1 (no anvil socket)" in err, err
    assert err.count("\n") == 1, err  # one line, not a second one through logging
    # an exit status of [revoke] ok_status counts as done (doveadm kick: nobody there)
    nobody = [sys.executable, "-c", "import sys; sys.exit(68)", "{user}"]
    cli.cfg = _config(tmp_path, sqlite_url, nobody)
    code, _, err = cli("user", "kick", "bob")
    assert code == 0, err
    assert "no live sessions of bob" in err and "warning" not in err, err
    cli.cfg = _config(tmp_path, sqlite_url, failing)
    # a revocation stands when its command fails (exit 0, with the warning)
    code, out, err = cli("user", "disable", "bob")
    assert code == 0 and "disabled" in out, err
    assert "warning: ending the sessions of bob failed" in err
