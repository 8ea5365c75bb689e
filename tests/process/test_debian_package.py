"""The man pages debian/gen-manpages builds from the commands' own --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[2]


DEBIAN = ROOT / "debian"


def test_man_page_holds_every_commands_help(tmp_path: Path) -> None:
    """debian/gen-manpages on the current CLI: a section per (sub)command, each with
    that command's own --help text."""
    subprocess.run(
        [sys.executable, str(DEBIAN / "gen-manpages"), str(tmp_path)], check=True, timeout=120
    )
    page = (tmp_path / "saslnetauth.8").read_text()
    from saslnetauth.cli import cli

    def paths(cmd: click.Command, ctx: click.Context, prefix: str) -> list[str]:
        found = [prefix]
        if isinstance(cmd, click.Group):  # list_commands: the top level is loaded lazily
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                if sub is not None and not sub.hidden:
                    sub_ctx = click.Context(sub, info_name=name, parent=ctx)
                    found += paths(sub, sub_ctx, f"{prefix} {name}")
        return found

    names = paths(cli, click.Context(cli, info_name="saslnetauth"), "saslnetauth")[1:]
    assert len(names) > 20
    for name in names:
        assert f'.SS "{name.replace("-", chr(92) + "-")}"' in page, name
    assert page.startswith(".TH SASLNETAUTH 8 ")
    assert "sqlite:////var/lib/saslnetauth/saslnetauth.db" in page.replace("\\-", "-")
    checkpw = (tmp_path / "saslnetauth-checkpassword.8").read_text()
    assert "REPLY\\-PROGRAM" in checkpw and "\\-\\-fallback" in checkpw
