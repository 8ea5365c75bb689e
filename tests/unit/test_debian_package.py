"""debian/ agrees with the rest of the repository (fast checks; tests/package/ builds it)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[2]
DEBIAN = ROOT / "debian"


def test_changelog_version_is_pyprojects() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    m = re.match(r"saslnetauth \(([^)]+)\) ", first)
    assert m and m.group(1) == version, first  # native: no Debian revision


def test_installed_files_exist_and_units_come_from_dovecot_examples() -> None:
    for line in (DEBIAN / "saslnetauth.install").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert (ROOT / line.split()[0]).exists(), line
    for line in (DEBIAN / "saslnetauth.docs").read_text().splitlines():
        assert (ROOT / line).is_file(), line
    rules = (DEBIAN / "rules").read_text()
    assert "s|/usr/local/bin/saslnetauth|/usr/bin/saslnetauth|g" in rules
    service = (ROOT / "dovecot-examples/systemd/saslnetauth.service").read_text()
    assert "ExecStart=/usr/local/bin/saslnetauth " in service  # what rules rewrites
    jail = (ROOT / "dovecot-examples/fail2ban/jail.d/saslnetauth.conf").read_text()
    assert re.search(r"^enabled *= *true$", jail, re.M)  # what rules turns off
    for script in ("saslnetauth.postinst", "saslnetauth.postrm", "saslnetauth.prerm"):
        assert "#DEBHELPER#" in (DEBIAN / script).read_text(), script


def test_man_page_holds_every_commands_help(tmp_path: Path) -> None:
    """debian/gen-manpages on the current CLI: a section per (sub)command, each with
    that command's own --help text."""
    subprocess.run(
        [sys.executable, str(DEBIAN / "gen-manpages"), str(tmp_path)], check=True, timeout=120
    )
    page = (tmp_path / "saslnetauth.8").read_text()
    from saslnetauth.cli import cli

    def paths(cmd: click.Command, prefix: str) -> list[str]:
        found = [prefix]
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                if not sub.hidden:
                    found += paths(sub, f"{prefix} {name}")
        return found

    names = paths(cli, "saslnetauth")[1:]
    assert len(names) > 20
    for name in names:
        assert f'.SS "{name.replace("-", chr(92) + "-")}"' in page, name
    assert page.startswith(".TH SASLNETAUTH 8 ")
    assert "sqlite:////var/lib/saslnetauth/saslnetauth.db" in page.replace("\\-", "-")
    checkpw = (tmp_path / "saslnetauth-checkpassword.8").read_text()
    assert "REPLY\\-PROGRAM" in checkpw and "\\-\\-fallback" in checkpw


def test_the_manual_ships_with_the_package() -> None:
    """README.md and every page of docs/ are installed in /usr/share/doc/saslnetauth/."""
    shipped = set((DEBIAN / "saslnetauth.docs").read_text().split())
    pages = {"README.md"} | {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")}
    assert pages - shipped == set()


def test_readme_names_the_package_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "bash .ci/build-deb" in readme
    assert "apt install ./build/deb/debian12/saslnetauth_*.deb" in readme
    assert (ROOT / ".ci" / "build-deb").is_file()
    assert 'rm -rf "$REPO/build/deb/$name"' in (ROOT / ".ci" / "build-deb").read_text()
