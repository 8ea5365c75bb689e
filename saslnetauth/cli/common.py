"""Shared pieces of the CLI: lazy configuration/store, password input, output."""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from saslnetauth.config import Config, load_config
from saslnetauth.errors import InvalidInputError
from saslnetauth.store import SqlStore

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_TEMPFAIL = 75

#: Longest password line read from standard input (bytes).
MAX_PASSWORD_INPUT = 4096


@dataclass
class AppContext:
    database: str | None
    config_path: str | None
    debug: bool = False
    _config: Config | None = None
    _stores: list[SqlStore] = field(default_factory=list)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path, self.database)
        return self._config

    def store(self, *, check_schema: bool = True, create: bool = False) -> SqlStore:
        from saslnetauth.runtime import open_store

        store = open_store(self.config, check_schema=check_schema, create=create)
        self._stores.append(store)
        return store

    def close(self) -> None:
        for store in self._stores:
            store.close()
        self._stores.clear()


pass_app = click.make_pass_decorator(AppContext)

T = TypeVar("T")


def services_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--service SVC`` (repeatable), given to the command as ``services``."""
    return click.option("--service", "services", multiple=True, metavar="SVC", help=help_text)


#: ``--comment TEXT`` of the commands that add a network.
comment_option = click.option("--comment", metavar="TEXT", help="Free text kept with the network.")

#: ``--json`` of the commands that print a JSON array (shape: see docs/cli.md).
json_array_option = click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON array (shape: see docs/cli.md)."
)
#: ``--json`` of the commands that print a JSON object (shape: see docs/cli.md).
json_object_option = click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON object (shape: see docs/cli.md)."
)


def read_password(*, from_stdin: bool, confirm: bool, purpose: str = "Password") -> str:
    """The password from stdin's first line, or prompted twice on a terminal."""
    if from_stdin:
        raw = sys.stdin.buffer.readline(MAX_PASSWORD_INPUT + 2)
        if len(raw) > MAX_PASSWORD_INPUT + 1 or (
            len(raw) > MAX_PASSWORD_INPUT and not raw.endswith(b"\n")
        ):
            raise InvalidInputError(f"password longer than {MAX_PASSWORD_INPUT} bytes")
        line = raw.rstrip(b"\n").rstrip(b"\r")
        if not line:
            raise InvalidInputError("empty password on standard input")
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInputError("password on standard input is not valid UTF-8") from None
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise InvalidInputError(
            "no password given: use --password-stdin (or --hash), or run on a terminal to be asked"
        )
    first = getpass.getpass(f"{purpose}: ", stream=sys.stderr)
    if not first:
        raise InvalidInputError("empty password")
    if confirm:
        second = getpass.getpass(f"{purpose} (again): ", stream=sys.stderr)
        if first != second:
            raise InvalidInputError("the passwords do not match")
    return first


def check_comment(comment: str | None) -> None:
    """A network's comment: printable text of at most 255 characters."""
    if comment is not None and (len(comment) > 255 or not comment.isprintable()):
        raise InvalidInputError("comment must be printable text of at most 255 characters")


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False))


def emit_records(
    as_json: bool,
    records: Sequence[T],
    to_json: Callable[[T], Any],
    columns: Sequence[str],
    row: Callable[[T], Sequence[str]],
) -> None:
    """The list commands' output: a JSON array of ``to_json(record)``, or a table."""
    if as_json:
        emit_json([to_json(r) for r in records])
    else:
        print_table(columns, (row(r) for r in records))


def print_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """A plain table for people (the ``--json`` forms are for scripts). Cells are plain
    text, never rich markup: ``[invalid]`` or a comment in brackets is shown as it is."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    console().print(table)


def console() -> Any:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)
