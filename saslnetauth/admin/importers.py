"""What the parsers of ``saslnetauth import`` share: records, errors, checks. Pure.

Nothing here touches files, sockets or the database: the callers hand in
the text, these functions hand back :class:`ImportRecord` objects and a
:class:`LineError` for every problem, each naming the line of the file, so
that an import can report *all* problems and write nothing.

The formats: :mod:`saslnetauth.admin.passwdfile` (Dovecot passwd-file) and
:mod:`saslnetauth.admin.csvimport` (CSV). This module holds what they share.

A user named twice in one file (after lower-casing, if user names are
compared in lower case) is an error on the second line.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from saslnetauth.credentials.passwords import (
    PLAINTEXT_SCHEMES,
    PasswordHasher,
    split_scheme,
)
from saslnetauth.errors import InvalidInputError
from saslnetauth.policy.model import normalize_username
from saslnetauth.policy.rules.netrules import NetworkRule

__all__ = [
    "MAX_LINE",
    "NET_SPLIT",
    "PROGRESS_EVERY",
    "Collector",
    "ImportRecord",
    "LineError",
    "ParseResult",
    "Progress",
    "add_rule",
    "check_hash",
    "check_name",
    "check_text",
    "is_plaintext",
    "lines",
]

#: Longest line we read; longer lines are errors (Dovecot has no limit, we bound memory).
MAX_LINE = 65536
#: Separates the networks of one field (allow_nets, a CSV cell).
NET_SPLIT = re.compile(r"[\s,]+")
#: How often (in lines) the progress callback is called.
PROGRESS_EVERY = 1000

_SURROGATE = re.compile("[\udc80-\udcff]")

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class ImportRecord:
    """One user as a file describes it (already validated)."""

    line: int
    name: str  # canonical user name
    password_hash: str | None  # canonical ``{SCHEME}value``; None: no password
    networks: tuple[NetworkRule, ...] = ()
    enabled: bool = True
    password_plain: str | None = field(default=None, repr=False)  # CSV ``password`` column


@dataclass(frozen=True, slots=True)
class LineError:
    """A problem on one line of the file (line 0: the file as a whole)."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass
class ParseResult:
    """Records, errors and the counts an import reports."""

    records: list[ImportRecord] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)
    #: passwd-file extra fields that were ignored, by name.
    ignored_fields: Counter[str] = field(default_factory=Counter)
    #: users without a password (nopassword, empty password field or cell).
    no_password: int = 0
    #: users disabled by a ``fail``/``nologin`` field.
    disabled_by_field: int = 0
    #: users whose stored hash is plain text (``{PLAIN}``).
    plaintext_hashes: int = 0
    #: the CSV file has a ``password`` (plain text) column.
    plaintext_column: bool = False
    #: lines read (for progress reports).
    lines: int = 0


class Collector:
    """Collects records, refusing a user named twice."""

    def __init__(self, result: ParseResult) -> None:
        self.result = result
        self.seen: dict[str, int] = {}

    def add(self, line: int, name: str | None, rec: ImportRecord | None) -> None:
        """Keep ``rec``; ``name`` alone (a line with problems) still claims the name."""
        if name is None:
            return
        first = self.seen.get(name)
        if first is not None:
            message = f"user {name} already defined on line {first}"
            self.result.errors.append(LineError(line, message))
            return
        self.seen[name] = line
        if rec is not None:
            self.result.records.append(rec)


# -- shared helpers ------------------------------------------------------------------


def lines(text: str | Iterable[str]) -> Iterable[str]:
    return text.splitlines() if isinstance(text, str) else text


def check_text(value: str, what: str) -> str | None:
    if _SURROGATE.search(value):
        return f"{what} is not valid UTF-8"
    if "\x00" in value:
        return f"{what} contains a NUL character"
    return None


def check_name(raw: str, lowercase: bool, problems: list[str]) -> str | None:
    try:
        return normalize_username(raw, lowercase=lowercase)
    except InvalidInputError as exc:
        problems.append(str(exc))
        return None


def check_hash(
    raw: str, hasher: PasswordHasher, default_scheme: str | None, problems: list[str]
) -> str | None:
    """Validate a hash; ``default_scheme`` applies to a value without ``{SCHEME}``."""
    if default_scheme is not None and split_scheme(raw)[0] is None:
        raw = f"{{{default_scheme}}}{raw}"
    try:
        parsed = hasher.parse(raw)
    except InvalidInputError as exc:
        problems.append(f"password: {exc}")
        return None
    if parsed.plaintext and not parsed.value:
        problems.append(f"password: {{{parsed.scheme}}} with an empty password")
        return None
    return parsed.stored


def add_rule(rules: dict[str, NetworkRule], rule: NetworkRule, problems: list[str]) -> None:
    old = rules.get(rule.spec)
    if old is None:
        rules[rule.spec] = rule
    elif old.services != rule.services:
        problems.append(f"network {rule.spec} given twice with different services")


def is_plaintext(phash: str | None) -> bool:
    return phash is not None and split_scheme(phash)[0] in PLAINTEXT_SCHEMES
