"""Files and configuration (issue 11, items 13 to 16): where the configuration comes
from, who may have written it, the database file's mode, symbolic links planted for
the passwd-file export, and database passwords in messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.clitools import run

DB_PASSWORD = "Db-Passw0rd-42"


# -- item 13: the configuration file ----------------------------------------------


def test_configuration_in_the_current_directory_is_ignored(tmp_path: Path) -> None:
    """A ./saslnetauth.toml planted where an admin runs saslnetauth once won over
    /etc/saslnetauth/saslnetauth.toml (and redirected the database)."""
    planted = tmp_path / "planted.db"
    (tmp_path / "saslnetauth.toml").write_text(f'database_url = "sqlite:///{planted}"\n')
    real = f"sqlite:///{tmp_path}/real.db"
    r = run("init", cwd=tmp_path, env={"SASLNETAUTH_DATABASE_URL": real})
    assert r.code == 0, r.err
    r = run("db", "current", cwd=tmp_path, env={"SASLNETAUTH_DATABASE_URL": real})
    assert "real.db" in r.out and "planted" not in r.out
    # without any database setting the planted file must not be read either
    r = run("db", "current", cwd=tmp_path)
    assert "planted" not in r.out + r.err
    assert not planted.exists()


def test_checkpassword_ignores_a_configuration_in_the_current_directory(
    tmp_path: Path,
) -> None:
    (tmp_path / "saslnetauth.toml").write_text("[checkpassword]\nallow_master_user = true\n")
    env = {"PATH": os.environ["PATH"], "MASTER_USER": "admin", "SERVICE": "imap"}
    r, w = os.pipe()
    os.write(w, b"alice\0pw\0\0")
    os.close(w)
    import subprocess
    import sys

    program = Path(sys.executable).parent / "saslnetauth-checkpassword"
    try:
        res = subprocess.run(
            ["/bin/bash", "-c", f'exec "$@" 3<&{r}', "bash", str(program), "/bin/true"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            pass_fds=(r,),
        )
    finally:
        os.close(r)
    assert res.returncode == 1 and "master user login refused" in res.stderr, res


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_configuration_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    cfg = tmp_path / "conf.toml"
    cfg.write_text(f'database_url = "sqlite:///{tmp_path}/x.db"\n')
    cfg.chmod(mode)
    for args in (("--config", str(cfg), "user", "list"), ("user", "list")):
        env = {"SASLNETAUTH_CONFIG": str(cfg)} if args[0] != "--config" else None
        r = run(*args, env=env)
        assert r.code == 1, r
        assert f"{cfg} is writable by its group or by others" in r.err
        assert f"chmod go-w {cfg}" in r.err and "Traceback" not in r.err
    cfg.chmod(0o644)
    r = run("--config", str(cfg), "init")
    assert r.code == 0, r.err


def test_configuration_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file away")
    cfg = tmp_path / "conf.toml"
    cfg.write_text(f'database_url = "sqlite:///{tmp_path}/x.db"\n')
    cfg.chmod(0o644)
    os.chown(cfg, 65534, 65534)  # nobody
    r = run("--config", str(cfg), "user", "list")
    assert r.code == 1 and "is owned by uid 65534" in r.err, r


# -- item 16: database passwords in messages --------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://saslnetauth:{DB_PASSWORD}@db.example:notaport/x",
        f"saslnetauth:{DB_PASSWORD}@db.example/x",
        f"postgresql+psycopg://saslnetauth:{DB_PASSWORD}@127.0.0.1:9/none",
        f"nosuchdb://saslnetauth:{DB_PASSWORD}@db.example/x",
    ],
)
def test_database_passwords_never_appear_in_messages(url: str) -> None:
    for args in (("user", "list"), ("--debug", "user", "list"), ("init",)):
        r = run(*args, db=url)
        assert r.code in (1, 75), r
        assert DB_PASSWORD not in r.out + r.err, r
    r = run("user", "list", db=url)
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1, r.err


def test_log_values_mask_url_passwords() -> None:
    from saslnetauth.logfmt import kv, mask_url

    text = kv("database unavailable", error=f"cannot use mysql://u:{DB_PASSWORD}@h/db: refused")
    assert DB_PASSWORD not in text and "mysql://u:***@h/db" in text
    assert mask_url("sqlite:////var/lib/x.db") == "sqlite:////var/lib/x.db"
    assert mask_url(f"'postgresql://u:p@{DB_PASSWORD}@h/db'") == "'postgresql://u:***@h/db'"


# -- item 15: the passwd-file export and planted symbolic links ------------------------


def test_export_does_not_follow_a_planted_symbolic_link(tmp_path: Path) -> None:
    """An export into a directory where someone planted a link (to a file the admin
    running the export may write, here a stand-in for /etc/shadow) once replaced the
    link's target."""
    db = f"sqlite:///{tmp_path}/e.db"
    assert run("init", db=db).code == 0
    r = run("user", "add", "alice", "--password-stdin", "--net", "any", db=db, stdin="pw\n")
    assert r.code == 0, r.err
    victim = tmp_path / "shadow"
    victim.write_text("root:$6$precious:::\n")
    victim.chmod(0o600)
    spool = tmp_path / "spool"
    spool.mkdir()
    planted = spool / "users.passwd"
    planted.symlink_to(victim)
    r = run("export", "dovecot-passwd-file", str(planted), db=db)
    assert r.code == 1, r
    assert "is a symbolic link; refusing to follow it" in r.err and "Traceback" not in r.err
    assert victim.read_text() == "root:$6$precious:::\n"
    assert oct(victim.stat().st_mode & 0o777) == oct(0o600)
    assert planted.is_symlink() and sorted(p.name for p in spool.iterdir()) == ["users.passwd"]
    real = spool / "real.passwd"
    r = run("export", "dovecot-passwd-file", str(real), db=db)
    assert r.code == 0 and real.read_text().startswith("alice:"), r.err
    assert oct(real.stat().st_mode & 0o777) == oct(0o640)
