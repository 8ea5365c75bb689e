"""Run the installed ``saslnetauth`` console script as an admin would."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


@dataclass
class Result:
    code: int
    out: str
    err: str


def run(
    *args: str,
    db: str | None = None,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    prog: str = "saslnetauth",
    timeout: float = 60,
    cwd: str | Path | None = None,
) -> Result:
    cmd = [str(BIN / prog)]
    if db is not None:
        cmd += ["--database", db]
    cmd += list(args)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SASLNETAUTH_")}
    full_env.update(env or {})
    p = subprocess.run(
        cmd,
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    return Result(p.returncode, p.stdout, p.stderr)


def init_with_user(
    db: str, name: str, password: str, *nets: str, extra: tuple[str, ...] = ()
) -> str:
    """``saslnetauth init`` then ``user add NAME --password-stdin --net NET...`` on
    ``db`` (the "database with alice" most tests start from); returns ``db``."""
    assert run("init", db=db).code == 0
    args = ["user", "add", name, "--password-stdin", *extra]
    for net in nets:
        args += ["--net", net]
    r = run(*args, db=db, stdin=password + "\n")
    assert r.code == 0, r.err
    return db
