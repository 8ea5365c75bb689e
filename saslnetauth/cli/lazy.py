"""A click group whose commands are imported when they are run, not when the CLI starts.

``saslnetauth --help`` and every command pay the import of the whole CLI
otherwise (SQLAlchemy, the engine, rich...). The group knows each command as
``"module:attribute"`` plus the first paragraph of its help, which is all
that ``--help`` shows of it (click shortens it the same way); the module is
imported when the command is looked up to run it or to show its own help.
tests/cli/test_cli_imports.py checks that each summary is the command's own.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import click

__all__ = ["LazyGroup"]


class LazyGroup(click.Group):
    def __init__(self, *args: Any, lazy: Mapping[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: command name -> ("module:attribute", first paragraph of its help)
        self.lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self.add_command(self.load(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def load(self, cmd_name: str) -> click.Command:
        module, _, attr = self.lazy[cmd_name][0].partition(":")
        cmd = getattr(importlib.import_module(module), attr)
        if not isinstance(cmd, click.Command):
            raise TypeError(f"{module}:{attr} is not a click command")
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's own listing, with a stand-in carrying the summary for each command
        not imported yet (``get_short_help_str`` reads only the first paragraph)."""
        shown: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            cmd = self.commands.get(name) or click.Command(name, help=self.lazy[name][1])
            if not cmd.hidden:
                shown.append((name, cmd))
        if not shown:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in shown)
        rows = [(name, cmd.get_short_help_str(limit)) for name, cmd in shown]
        with formatter.section("Commands"):
            formatter.write_dl(rows)
