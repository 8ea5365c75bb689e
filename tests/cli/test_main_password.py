"""``saslnetauth user set --main-password-services``, ``user show`` and ``check``
explaining ``app_password_required``, through the console script."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.clitools import init_with_user, run

PW = "cli main pw"
HOME = "192.0.2.9"


def _check(
    db: str, service: str, password: str = PW, config: Path | None = None
) -> tuple[int, str]:
    args = ["check", "alice", "--rip", HOME, "--service", service, "--password-stdin"]
    if config is not None:
        args = ["--config", str(config), *args]
    r = run(*args, db=db, stdin=password + "\n")
    return r.code, r.out


def test_set_show_and_check(sqlite_url: str) -> None:
    db = init_with_user(sqlite_url, "alice", PW, "192.0.2.0/24")
    r = run("user", "set", "alice", "--main-password-services", "SMTP,submission", db=db)
    assert (r.code, r.out.strip()) == (0, "main password of alice: smtp,submission")
    show = run("user", "show", "alice", db=db).out
    assert "main password services: smtp,submission\n" in show
    assert (
        json.loads(run("user", "show", "alice", "--json", db=db).out)["main_password_services"]
        == "smtp,submission"
    )
    code, out = _check(db, "imap")
    assert code == 1
    assert "reason: app_password_required (the main password is right" in out
    assert "main password services: smtp,submission (user set --main-password-services)" in out
    assert _check(db, "submission")[0] == 0
    code, out = _check(db, "imap", "wrong")  # a wrong password stays a wrong password
    assert code == 1 and "reason: bad_password" in out
    r = run("user", "set", "alice", "--main-password-services", "none", db=db)
    assert "no service (app passwords only)" in r.out
    assert _check(db, "smtp")[0] == 1
    r = run("user", "set", "alice", "--main-password-services", "default", db=db)
    assert r.out.strip() == "main password of alice: all services (the default)"
    assert _check(db, "imap")[0] == 0


def test_the_configured_default(sqlite_url: str, tmp_path: Path) -> None:
    db = init_with_user(sqlite_url, "alice", PW, "192.0.2.0/24")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[passwords]\nmain_password_services = "smtp"\n')
    cfg.chmod(0o600)
    code, out = _check(db, "imap", config=cfg)
    assert code == 1
    assert "main password services: smtp ([passwords] main_password_services)" in out
    assert _check(db, "smtp", config=cfg)[0] == 0
    cfg.write_text('[passwords]\nmain_password_services = "smtp,all"\n')
    r = run("--config", str(cfg), "user", "list", db=db)
    assert r.code != 0 and "main_password_services" in r.err


def test_refuses_what_does_not_parse(sqlite_url: str) -> None:
    db = init_with_user(sqlite_url, "alice", PW, "192.0.2.0/24")
    for bad in ("", "imap,none", "i map!"):
        r = run("user", "set", "alice", "--main-password-services", bad, db=db)
        assert r.code != 0, bad
    assert run("user", "set", "nobody", "--main-password-services", "smtp", db=db).code != 0
    assert (
        "main password services: all services (the default)"
        in run("user", "show", "alice", db=db).out
    )
