"""The Debian package (debian/, docs/debian-package.md) as the package tests see it.

:func:`package` builds it with ``.ci/build-deb`` (lintian included; cached on
the source's content, so only the first test of a run waits) and returns the
``.deb``. :func:`fresh_root` gives a throw-away copy of a release's tree: an
overlay over the cached Debian 12 root of ``.ci/debian12-root`` or the Debian
13 chroot of ``.ci/debian13``, whose changes vanish with it; apt's downloads
are kept outside (``/opt/saslnetauth-ci/deb/apt``) so that the dependencies
come from the archive once. :func:`start_as_unit` runs the installed
``saslnetauth.service`` the way systemd would with ``saslnetauth.socket``
(no systemd runs in a chroot).
"""

from __future__ import annotations

import configparser
import contextlib
import functools
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.support.net import PeerError, tail
from tests.support.peers import missing
from tests.support.roots import MOUNTS, REPO, TRIXIE_DIR, Root, trixie

CACHE = Path(os.environ.get("SASLNETAUTH_DEB_CACHE", "/opt/saslnetauth-ci/deb"))
BOOKWORM_DIR = Path(os.environ.get("SASLNETAUTH_BOOKWORM_DIR", "/opt/saslnetauth-ci/bookworm"))
BOOKWORM_TGZ = Path(os.environ.get("SASLNETAUTH_BOOKWORM_TGZ", str(CACHE / "bookworm-base.tgz")))
RELEASES = ["debian12", "debian13"]
_UPPER: dict[Path, Path] = {}
"""The upper (writable) layer of each :func:`fresh_root` overlay."""
BUILD_TOOLS = ["dpkg-buildpackage", "dh_virtualenv", "lintian"]
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Paths whose content changes on every install and removal, whatever the package.
VOLATILE = (
    "proc",
    "sys",
    "dev",
    "run",
    "tmp",
    "var/cache",
    "var/log",
    "var/lib/apt",
    "var/lib/dpkg",
)


def _require_tools(release: str) -> None:
    if os.geteuid() != 0:
        missing("root privileges (the package is built and installed in chroots)")
    for tool in BUILD_TOOLS:
        if shutil.which(tool) is None:
            missing(f"program {tool} (Debian package build)")
    if release == "debian13":
        root = trixie()
        for tool in BUILD_TOOLS:
            if not os.access(root.outside(f"/usr/bin/{tool}"), os.X_OK):
                missing(f"program {tool} in the Debian 13 chroot (bash .ci/debian13)")
    elif not (BOOKWORM_DIR / ".saslnetauth-ready").exists() or not BOOKWORM_TGZ.exists():
        missing(f"Debian 12 package-test root at {BOOKWORM_DIR} (bash .ci/debian12-root)")


def _build_command(release: str, old: bool) -> list[str]:
    return ["bash", str(REPO / ".ci" / "build-deb"), *(["--old"] if old else []), release]


@functools.cache
def _build(release: str, old: bool) -> tuple[subprocess.Popen[bytes], Path]:
    """``.ci/build-deb`` for (release, old), started once per test session; with it,
    the other builds the package tests need start too, so that the two releases
    build side by side (the machine has two cores)."""
    if (release, old) == ("debian12", False):
        for other in (("debian13", False), ("debian12", True)):
            with contextlib.suppress(BaseException):
                _require_tools(other[0])
                _build(*other)
    (CACHE / "logs").mkdir(parents=True, exist_ok=True)
    where = hashlib.sha256(str(REPO).encode()).hexdigest()[:10]  # this checkout's last one
    log = CACHE / "logs" / f"build-deb-{where}-{release}{'-old' if old else ''}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            _build_command(release, old),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc, log


def start_builds(selected: list[str]) -> bool:
    """Start the package builds at collection when a package test is among
    ``selected`` node ids (the run's first package test would start them anyway;
    started now, they build while the CLI and database tiers run). A missing tool
    starts nothing here: the tests themselves then report it."""
    if not any(n.startswith("tests/package/") for n in selected):
        return False
    try:
        _require_tools("debian12")
        _build("debian12", False)  # starts the others as well
    except BaseException:  # pytest's skip or fail outcome: the tests report it
        return False
    return True


def package(release: str, *, old: bool = False) -> Path:
    """The .deb for ``release`` built from this checkout (``old``: from the previous
    release commit, see .ci/build-deb); the build fails the test with its output."""
    _require_tools(release)
    _build("debian12", False)  # starts the others as well
    proc, log = _build(release, old)
    try:
        status = proc.wait(1500)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        raise PeerError(f"{' '.join(_build_command(release, old))} timed out") from None
    if status != 0:
        raise PeerError(
            f"{' '.join(_build_command(release, old))} exited {status}:\n"
            f"{tail(log.read_text(errors='replace'), 80)}"
        )
    debs = sorted((REPO / "build" / "deb" / (release + ("-old" if old else ""))).glob("*.deb"))
    assert len(debs) == 1, debs
    return debs[0]


def run_in(
    root: Root, script: str, *, timeout: float = 600, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``sh -c script`` in ``root`` as root with a plain environment (like an admin's)."""
    env = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
    res = subprocess.run(
        [
            "chroot",
            str(root.path),
            "/usr/bin/env",
            "-i",
            *(f"{k}={v}" for k, v in env.items()),
            "/bin/sh",
            "-c",
            script,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and res.returncode != 0:
        raise PeerError(
            f"in {root.release}: {script!r} exited {res.returncode}:\n"
            f"{tail(res.stdout + res.stderr, 60)}"
        )
    return res


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, timeout=60)


@contextmanager
def fresh_root(release: str) -> Iterator[Root]:
    """A writable throw-away copy (overlay) of ``release``'s tree, with /proc, /dev
    and /sys, apt's download cache, and its package lists fetched anew when older
    than a day."""
    base = BOOKWORM_DIR if release == "debian12" else TRIXIE_DIR
    if release == "debian13":
        trixie()
    work = Path(tempfile.mkdtemp(prefix="ovl-", dir=CACHE))
    work.chmod(0o755)  # the peers (postfix) reach their files in there
    merged = work / "root"
    archives = CACHE / "apt" / release
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        for d in (work / "upper", work / "work", merged, archives / "partial"):
            d.mkdir(parents=True, exist_ok=True)
        _mount(
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={base},upperdir={work / 'upper'},workdir={work / 'work'}",
            str(merged),
        )
        stack.callback(subprocess.run, ["umount", "-l", str(merged)], check=False)
        subprocess.run(["bash", str(MOUNTS), str(merged), "up"], check=True, timeout=60)
        stack.callback(subprocess.run, ["bash", str(MOUNTS), str(merged), "down"], check=False)
        _mount("--bind", str(archives), str(merged / "var/cache/apt/archives"))
        stack.callback(
            subprocess.run, ["umount", "-l", str(merged / "var/cache/apt/archives")], check=False
        )
        shutil.copy2("/etc/resolv.conf", merged / "etc/resolv.conf")
        shutil.copy2("/etc/ssl/certs/ca-certificates.crt", merged / "etc/ssl/certs/")
        root = Root(
            f"{'Debian 12' if release == 'debian12' else 'Debian 13'} (package test)",
            merged,
            Path("/opt/exim"),
        )
        _UPPER[merged] = work / "upper"
        stack.callback(_UPPER.pop, merged, None)
        if _lists_age(root) > 86400:  # the archive moved on since the tree was made
            run_in(root, "apt-get update -q", timeout=600)
        yield root


def _lists_age(root: Root) -> float:
    """Seconds since apt's package lists in ``root`` were fetched (inf: none)."""
    lists = list(root.outside("/var/lib/apt/lists").glob("*_InRelease"))
    if not lists:
        return float("inf")
    return time.time() - min(p.stat().st_mtime for p in lists)


def install_deb(root: Root, deb: Path) -> str:
    """``apt install ./saslnetauth_*.deb`` in ``root``; returns apt's output."""
    inner = root.outside("/tmp") / deb.name
    shutil.copy2(deb, inner)
    res = run_in(root, f"apt-get install -y -q ./tmp/{deb.name}", timeout=900)
    return res.stdout + res.stderr


def install_dependencies(root: Root, deb: Path) -> None:
    """What the package depends on and recommends, from the archive (``apt-get
    satisfy``), so that a file list taken now differs from one after ``apt install``
    and ``apt purge`` only by what the package itself left."""
    fields = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Pre-Depends", "Depends", "Recommends"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    wanted = ", ".join(line.split(":", 1)[1].strip() for line in fields.splitlines() if ":" in line)
    run_in(root, f"apt-get satisfy -y -q '{wanted}'", timeout=900)


def added_paths(root: Root, before: set[str]) -> list[str]:
    """Paths the overlay ``root`` gained since ``before`` (its upper layer only: the
    shared Debian 13 chroot below may change meanwhile, other tests use it),
    volatile ones and deletions left out."""
    upper = _UPPER[root.path]
    found = []
    for dirpath, dirnames, filenames in os.walk(upper):
        rel = os.path.relpath(dirpath, upper)
        if rel != "." and (rel in VOLATILE or rel.startswith(tuple(v + "/" for v in VOLATILE))):
            dirnames.clear()
            continue
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                continue  # a whiteout: deleted
            path = os.path.normpath(os.path.join("/", rel, name))
            if path not in before:
                found.append(path)
    return sorted(found)


def file_list(root: Root) -> set[str]:
    """Every path in ``root`` but the volatile ones (see VOLATILE)."""
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root.path):
        rel = os.path.relpath(dirpath, root.path)
        if rel != "." and (rel in VOLATILE or rel.startswith(tuple(v + "/" for v in VOLATILE))):
            dirnames.clear()
            continue
        for name in dirnames + filenames:
            found.add(os.path.normpath(os.path.join("/", rel, name)))
    return found


def unit(root: Root, name: str) -> configparser.ConfigParser:
    """An installed unit file of ``root`` (systemd's directories of that release)."""
    for d in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        path = root.outside(f"{d}/{name}")
        if path.exists():
            parser = configparser.ConfigParser(strict=False, interpolation=None)
            parser.optionxform = str  # type: ignore[assignment,method-assign]
            parser.read_string(path.read_text())
            return parser
    raise PeerError(f"{name} is not installed in {root.release}")


def listen_streams(root: Root) -> list[str]:
    text = ""
    for d in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        path = root.outside(f"{d}/saslnetauth.socket")
        if path.exists():
            text = path.read_text()
    return [
        ln.split("=", 1)[1].strip() for ln in text.splitlines() if ln.startswith("ListenStream=")
    ]


def unit_command(root: Root) -> tuple[list[str], list[str]]:
    """(the sockets of saslnetauth.socket, the command that serves them as the unit's
    user): systemd-socket-activate creates the sockets as systemd would and hands
    them over (LISTEN_FDS) to ExecStart, run by setpriv as User, Group and
    SupplementaryGroups."""
    svc = unit(root, "saslnetauth.service")["Service"]
    sockets = listen_streams(root)
    activate = root.require_binary("systemd-socket-activate")
    groups = svc.get("SupplementaryGroups", "").replace(" ", ",")
    cmd = [activate]
    for s in sockets:
        cmd += ["-l", s]
    cmd += [
        "/usr/bin/setpriv",
        f"--reuid={svc['User']}",
        f"--regid={svc['Group']}",
        f"--groups={groups}" if groups else "--clear-groups",
        "--",
        *svc["ExecStart"].split(),
    ]
    return sockets, cmd
