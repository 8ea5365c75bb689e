"""``saslnetauth import`` / ``export`` through the real console script, on every database."""

from __future__ import annotations

import json
import os
import pty
import select
import stat
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from saslnetauth.admin.atomicfile import write_atomic
from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.store import SqlStore
from tests.support.clitools import BIN, run

CHEAP = "[passwords]\nargon2_memory_kib = 256\nargon2_time_cost = 1\n"


@pytest.fixture
def db(db_url: str) -> str:
    r = run("init", db=db_url)
    assert r.code == 0, r.err
    return db_url


@pytest.fixture
def cfg(tmp_path: Path) -> str:
    path = tmp_path / "cheap.toml"
    path.write_text(CHEAP)
    return str(path)


@pytest.fixture(scope="module")
def sha512() -> str:
    return PasswordHasher().hash("pw", "SHA512-CRYPT")


def users(db: str) -> dict[str, dict[str, object]]:
    r = run("user", "list", "--json", db=db)
    assert r.code == 0, r.err
    return {u["name"]: u for u in json.loads(r.out)}


def nets(u: dict[str, object]) -> list[tuple[str, list[str]]]:
    return [(n["network"], n["services"]) for n in u["networks"]]  # type: ignore[attr-defined,index]


def imp(db: str, fmt: str, path: Path, *extra: str, cfg: str | None = None) -> dict[str, object]:
    opts = ["--config", cfg] if cfg else []
    r = run(*opts, "import", fmt, str(path), "--json", *extra, db=db)
    data = json.loads(r.out)
    assert r.code == (1 if data["errors"] else 0), r.err
    return data


def counts(data: dict[str, object]) -> tuple[object, ...]:
    return data["added"], data["updated"], data["unchanged"], len(data["errors"])  # type: ignore[arg-type]


def test_passwd_file_import_reimport_and_dry_run(db: str, tmp_path: Path, sha512: str) -> None:
    src = tmp_path / "users.passwd"
    src.write_text(
        "# exported from the old server\n"
        f"alice:{sha512}:1000:1000::/home/alice:/bin/sh:allow_nets=192.0.2.0/24,2001:db8::/32 "
        "userdb_quota_rule=*:storage=1G\n"
        "bob:{PLAIN}pw::::::allow_nets=local\n"
        "carol::::::::\n"
        f"dave:{sha512}::::::fail allow_nets=any\n"
    )
    dry = imp(db, "passwd-file", src, "--dry-run")
    assert counts(dry) == (4, 0, 0, 0) and dry["written"] is False
    assert users(db) == {}  # a dry run writes nothing

    first = imp(db, "passwd-file", src)
    assert counts(first) == (4, 0, 0, 0) and first["written"] is True
    assert first["ignored_fields"] == {"userdb_quota_rule": 1}
    assert first["no_password"] == 1 and first["disabled_by_field"] == 1
    got = users(db)
    assert nets(got["alice"]) == [("192.0.2.0/24", []), ("2001:db8::/32", [])]
    assert got["alice"]["scheme"] == "SHA512-CRYPT" and got["alice"]["enabled"] is True
    assert got["carol"]["has_password"] is False and got["dave"]["enabled"] is False
    r = run("check", "alice", "--rip", "192.0.2.9", "--password-stdin", db=db, stdin="pw\n")
    assert r.code == 0, r.out

    assert counts(imp(db, "passwd-file", src)) == (0, 0, 4, 0)  # idempotent

    run("user", "net", "add", "bob", "198.51.100.0/24", db=db)  # drift, undone by the file
    src.write_text(
        f"alice:{sha512}::::::allow_nets=192.0.2.0/24,203.0.113.0/24\n"
        "bob:{PLAIN}pw::::::allow_nets=local\n"
        "carol:{PLAIN}new\n"
        "erin:{PLAIN}x\n"
    )
    before = users(db)
    assert counts(imp(db, "passwd-file", src, "--dry-run")) == (1, 3, 0, 0)
    assert users(db) == before
    assert counts(imp(db, "passwd-file", src)) == (1, 3, 0, 0)
    got = users(db)
    assert nets(got["alice"]) == [("192.0.2.0/24", []), ("203.0.113.0/24", [])]
    assert nets(got["bob"]) == [("local", [])]
    assert got["carol"]["scheme"] == "PLAIN"
    assert "dave" in got  # users missing from the file are left alone
    assert counts(imp(db, "passwd-file", src)) == (0, 0, 4, 0)


def test_one_bad_line_writes_nothing(db: str, tmp_path: Path, sha512: str) -> None:
    run("user", "add", "keep", "--hash", "{PLAIN}old", "--net", "192.0.2.1", db=db)
    src = tmp_path / "users.passwd"
    src.write_text(
        f"good1:{sha512}::::::allow_nets=192.0.2.0/24\n"
        "keep:{PLAIN}new::::::allow_nets=any\n"
        "\n"
        "bad:{PLAIN}x::::::allow_nets=10.1.2.3/8\n"
        "good1:{PLAIN}again\n"
        "worse:{MD4}abc\n"
    )
    before = users(db)
    r = run("import", "passwd-file", str(src), db=db)
    assert r.code == 1
    lines = r.err.splitlines()
    assert lines[0] == (
        f"{src}:4: allow_nets: invalid network '10.1.2.3/8': host bits are set; "
        "did you mean 10.0.0.0/8?"
    )
    assert lines[1] == f"{src}:5: user good1 already defined on line 1"
    assert lines[2].startswith(f"{src}:6: password: unknown password scheme {{MD4}}")
    assert "3 error(s)" in lines[3] and "nothing written" in lines[3]
    assert "Traceback" not in r.err
    assert users(db) == before


def test_csv_import_plaintext_and_services(db: str, tmp_path: Path, cfg: str) -> None:
    src = tmp_path / "users.csv"
    src.write_text(
        "name,password,networks,enabled\n"
        'alice,"pa,ss",192.0.2.0/24@smtp+submission 2001:db8::/32,yes\n'
        "bob,pw,local,no\n"
        "carol,,,\n"
    )
    r = run("--config", cfg, "import", "csv", str(src), db=db)
    assert r.code == 0, r.err
    assert "3 added, 0 updated, 0 unchanged, 0 errors" in r.out
    assert "plain-text passwords" in r.err
    got = users(db)
    assert nets(got["alice"]) == [("192.0.2.0/24", ["smtp", "submission"]), ("2001:db8::/32", [])]
    assert got["alice"]["scheme"] == "ARGON2ID"
    assert got["bob"]["enabled"] is False and got["carol"]["has_password"] is False

    def check(rip: str, svc: str) -> int:
        return run(
            "check",
            "alice",
            "--rip",
            rip,
            "--service",
            svc,
            "--password-stdin",
            db=db,
            stdin="pa,ss\n",
        ).code

    assert check("192.0.2.9", "smtp") == 0
    assert check("192.0.2.9", "imap") == 1
    assert check("2001:db8::9", "imap") == 0
    # Same plain-text passwords again: verified, not re-hashed: unchanged.
    assert counts(imp(db, "csv", src, cfg=cfg)) == (0, 0, 3, 0)
    src.write_text("name,password\nalice,changed\n")
    assert counts(imp(db, "csv", src, cfg=cfg)) == (0, 1, 0, 0)
    r = run("check", "alice", "--rip", "2001:db8::9", "--password-stdin", db=db, stdin="changed\n")
    assert r.code == 1 and "no_network_rules" in r.out  # the file's (empty) networks replaced


def test_csv_errors_and_pam_user(db: str, tmp_path: Path) -> None:
    store = SqlStore(db)
    try:
        store.add_user("pamuser", None)
        store.set_backend("pamuser", "pam")
    finally:
        store.close()
    src = tmp_path / "users.csv"
    src.write_text(
        "name,password_hash,networks\n"
        "ok,{PLAIN}x,192.0.2.0/24\n"
        "pamuser,{PLAIN}x,\n"
        "bad,{PLAIN}x,192.0.2.0/24@\n"
    )
    data = imp(db, "csv", src)
    assert data["errors"] == [
        {"line": 3, "error": data["errors"][0]["error"]},  # type: ignore[index]
        {
            "line": 4,
            "error": "networks: '192.0.2.0/24@': no service after '@' (e.g. "
            "192.0.2.0/24@smtp+imap)",
        },
    ]
    assert "PAM" in data["errors"][0]["error"]  # type: ignore[index]
    assert data["written"] is False and "ok" not in users(db)
    bad = tmp_path / "typo.csv"
    bad.write_text("name,pasword_hash\nx,y\n")
    r = run("import", "csv", str(bad), db=db)
    assert r.code == 1 and f"{bad}:1: unknown column(s) 'pasword_hash'" in r.err


def test_import_from_stdin_and_missing_file(db: str, tmp_path: Path) -> None:
    r = run("import", "passwd-file", "-", db=db, stdin="alice:{PLAIN}x\n")
    assert r.code == 0 and "1 added" in r.out, r.err
    r = run("import", "csv", str(tmp_path / "nope.csv"), db=db)
    assert r.code == 1 and "cannot read" in r.err and "Traceback" not in r.err


def test_export_to_file_and_stdout(db: str, tmp_path: Path, sha512: str) -> None:
    src = tmp_path / "in.passwd"
    src.write_text(
        f"alice:{sha512}::::::allow_nets=192.0.2.0/24\n"
        "bob:{PLAIN}pw::::::allow_nets=any\n"
        "nonet:{PLAIN}pw\n"
        "off:{PLAIN}pw::::::fail\n"
        "nopw:\n"
    )
    assert imp(db, "passwd-file", src)["written"]
    run("net", "add", "198.51.100.0/24", "--service", "smtp", db=db)
    run("net", "add", "local", db=db)
    out = tmp_path / "dovecot.passwd"
    r = run("export", "dovecot-passwd-file", str(out), db=db)
    assert r.code == 0, r.err
    assert "exported 3 user(s)" in r.out and "1 disabled, 1 no_password" in r.out
    assert "1 network rule(s) left out" in r.out
    assert out.read_text().splitlines() == [
        f"alice:{sha512}::::::allow_nets=192.0.2.0/24,local",
        "bob:{PLAIN}pw::::::allow_nets=0.0.0.0/0,::/0,local",
        "nonet:{PLAIN}pw::::::allow_nets=local",
    ]
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    r = run("net", "del", "local", db=db)
    r = run("export", "dovecot-passwd-file", "-", "--service", "smtp", db=db)
    assert r.code == 0 and "exported 3 user(s) to standard output for smtp" in r.err
    assert r.out.splitlines()[2] == "nonet:{PLAIN}pw::::::allow_nets=198.51.100.0/24"
    r = run("export", "dovecot-passwd-file", "-", "--service", "submission", db=db)
    assert r.out.splitlines()[2] == "nonet:{PLAIN}pw::::::allow_nets=255.255.255.255/32"
    assert "1 user(s) have no network for submission" in r.err


def test_write_atomic_modes_and_reload_stamp(tmp_path: Path) -> None:
    target = tmp_path / "f"
    res = write_atomic(target, b"one\n")
    assert res.changed and stat.S_IMODE(target.stat().st_mode) == 0o640
    target.chmod(0o600)
    ino = target.stat().st_ino
    assert write_atomic(target, b"one\n").changed is False  # same content: untouched
    assert target.stat().st_ino == ino
    old = target.stat().st_mtime
    write_atomic(target, b"two\n")  # same size, same second: mtime must still move on
    assert target.read_bytes() == b"two\n" and target.stat().st_ino != ino
    assert int(target.stat().st_mtime) > int(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    # issue 11 item 15: a symbolic link at the target is refused, never followed
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(OSError, match="is a symbolic link; refusing to follow it"):
        write_atomic(link, b"three\n")
    assert link.is_symlink() and target.read_bytes() == b"two\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_write_atomic_keeps_owner(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown")
    target = tmp_path / "f"
    target.write_bytes(b"x")
    os.chown(target, 65534, 65534)
    write_atomic(target, b"yy")
    st = target.stat()
    assert (st.st_uid, st.st_gid) == (65534, 65534)


def _run_on_tty(args: list[str]) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal; return (code, output)."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SASLNETAUTH_")}
    env.update(TERM="xterm", COLUMNS="100")
    p = subprocess.Popen(
        [str(BIN / "saslnetauth"), *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif p.poll() is not None:
            break
    os.close(master)
    return p.wait(timeout=10), b"".join(chunks).decode(errors="replace")


def test_progress_bar_only_on_a_terminal(sqlite_url: str, tmp_path: Path) -> None:
    assert run("init", db=sqlite_url).code == 0
    src = tmp_path / "many.passwd"
    src.write_text("".join(f"user{i}:{{PLAIN}}pw{i}\n" for i in range(3000)))
    code, output = _run_on_tty(
        ["--database", sqlite_url, "import", "passwd-file", str(src), "--dry-run"]
    )
    assert code == 0, output
    assert "reading" in output and "\x1b[" in output  # rich drew a bar
    r = run("import", "passwd-file", str(src), "--dry-run", db=sqlite_url)
    assert r.code == 0 and "reading" not in r.out + r.err and "\x1b[" not in r.out + r.err


@pytest.mark.slow
def test_import_100k_users_sqlite(sqlite_url: str, tmp_path: Path) -> None:
    """Correctness only; the timing lives in benchmarks/import_100k.py."""
    assert run("init", db=sqlite_url).code == 0
    hasher = PasswordHasher("ARGON2ID", argon2_memory_kib=256, argon2_time_cost=1)
    pool = [hasher.hash(f"pw{i}", s) for i in range(3) for s in ("ARGON2ID", "SHA512-CRYPT")]
    src = tmp_path / "100k.passwd"
    with src.open("w") as fh:
        for i in range(100_000):
            net = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
            extra = ",2001:db8::/32" if i % 2 else ""
            fh.write(f"u{i:06d}:{pool[i % len(pool)]}::::::allow_nets={net}{extra}\n")
    r = run("import", "passwd-file", str(src), db=sqlite_url, timeout=300)
    assert r.code == 0, r.err
    assert "100000 added, 0 updated, 0 unchanged, 0 errors" in r.out
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM users")).scalar() == 100_000
        assert conn.execute(sa.text("SELECT count(*) FROM user_networks")).scalar() == 150_000
        row = conn.execute(
            sa.text(
                "SELECT u.password_hash, n.network FROM users u JOIN user_networks n "
                "ON n.user_id = u.id WHERE u.name = 'u070001' ORDER BY n.id"
            )
        ).all()
    engine.dispose()
    assert row == [(pool[70001 % len(pool)], "10.1.17.113"), (pool[70001 % 6], "2001:db8::/32")]
