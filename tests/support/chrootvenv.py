"""Run this checkout's tests with the Python of a chroot (Debian 13's 3.13).

The checkout is bind-mounted into the chroot at its own path, in a private
mount namespace (``unshare --mount``) that ends with the command, so nothing
stays mounted and concurrent runs do not see each other's mounts. The venv
lives inside the chroot (``/opt/saslnetauth-venvs``), holds saslnetauth
installed editable from the checkout with its test extras from PyPI, and is
reused while the checkout's path, ``pyproject.toml`` and the chroot's Python
stay the same. pip verifies PyPI's certificate with the CA bundle that
``.ci/debian13`` copies into the chroot (this machine reaches the registries
through its own certificate authority).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import PeerError, tail
from tests.support.roots import REPO, Root

VENVS = "/opt/saslnetauth-venvs"
PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
#: Variables passed into the chroot when set here (database servers on loopback, CI).
PASSED_ENV = ("CI", "SASLNETAUTH_TEST_PG", "SASLNETAUTH_TEST_MYSQL")


@dataclass
class Venv:
    python: str
    """The venv's python, a path inside the chroot."""
    built: bool
    """False when an existing venv was reused."""
    seconds: float


def _env() -> dict[str, str]:
    env = {
        "PATH": PATH,
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "PIP_CERT": CA_BUNDLE,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_DEFAULT_TIMEOUT": "180",
    }
    for name in PASSED_ENV:
        if name in os.environ:
            env[name] = os.environ[name]
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):  # a mirror reachable from inside
        value = os.environ.get(name, "")
        if value.startswith(("http://", "https://")):
            env[name] = value
    return env


def _git_dir() -> Path | None:
    """The repository's git directory when it lies outside the checkout (a worktree's)."""
    git = shutil.which("git")
    if git is None:
        return None
    res = subprocess.run(
        [git, "-C", str(REPO), "rev-parse", "--path-format=absolute", "--git-common-dir"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    path = Path(res.stdout.strip()) if res.returncode == 0 else None
    if path is None or not path.is_dir() or path.is_relative_to(REPO):
        return None
    return path


def chroot_command(root: Root, script: str) -> list[str]:
    """The command that runs the shell ``script`` in ``root`` with the checkout (and a
    worktree's git directory) mounted at its own path. Every step execs the next: a
    script that ends in ``exec PROGRAM`` leaves PROGRAM with the pid of the process
    started."""
    mounts = []
    for path in (REPO, _git_dir()):
        if path is not None:
            root.outside(path).mkdir(parents=True, exist_ok=True)
            mounts.append(
                f"mount --bind {shlex.quote(str(path))} {shlex.quote(str(root.outside(path)))}"
            )
    shutil.copy2(CA_BUNDLE, root.outside(CA_BUNDLE))
    env_args = " ".join(shlex.quote(f"{k}={v}") for k, v in _env().items())
    outer = (
        " && ".join(mounts) + f" && exec chroot {shlex.quote(str(root.path))} env -i {env_args} "
        f"sh -c {shlex.quote(script)}"
    )
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", outer]


def in_chroot(root: Root, script: str, timeout: float, log: Path) -> int:
    """Run the shell ``script`` as :func:`chroot_command` does; output to ``log``;
    returns the exit status."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            chroot_command(root, script),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            raise PeerError(
                f"timed out after {timeout:g} s:\n{tail(log.read_text(), 60)}"
            ) from None


def _python_version(root: Root) -> str:
    res = subprocess.run(
        root.cmd("/usr/bin/python3", "-c", "import sys; print(sys.version)"),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return res.stdout.strip()


def venv(root: Root, log: Path, timeout: float = 900) -> Venv:
    """A venv in ``root`` with this checkout (editable) and its test extras; reused when
    the checkout's path, pyproject.toml and the root's Python are unchanged."""
    started = time.monotonic()
    version = _python_version(root)
    where = hashlib.sha256(str(REPO).encode()).hexdigest()[:10]
    what = hashlib.sha256(
        (version + "\0").encode() + (REPO / "pyproject.toml").read_bytes()
    ).hexdigest()[:12]
    inner = f"{VENVS}/{where}-{what}"
    stamp = root.outside(inner) / ".saslnetauth-ready"
    root.outside(VENVS).mkdir(parents=True, exist_ok=True)
    with open(root.outside(VENVS) / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            return Venv(f"{inner}/bin/python", False, time.monotonic() - started)
        for old in root.outside(VENVS).glob(f"{where}-*"):  # this checkout's outdated venvs
            shutil.rmtree(old, ignore_errors=True)
        script = (
            f"set -e; python3 -m venv {inner}; "
            f"{inner}/bin/python -m pip install -q --upgrade pip; "
            f"{inner}/bin/python -m pip install -q -e {shlex.quote(str(REPO))}'[test]'"
        )
        status = in_chroot(root, script, timeout, log)
        if status != 0:
            shutil.rmtree(root.outside(inner), ignore_errors=True)
            raise PeerError(
                f"cannot make the venv in {root.release} (exit {status}):\n"
                + tail(log.read_text(errors="replace"), 60)
            )
        stamp.write_text(version + "\n")
    return Venv(f"{inner}/bin/python", True, time.monotonic() - started)
