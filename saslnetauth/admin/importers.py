"""Parse user lists for ``saslnetauth import``: Dovecot passwd-file and CSV. Pure.

Nothing here touches files, sockets or the database: the callers hand in
the text, these functions hand back :class:`ImportRecord` objects and a
:class:`LineError` for every problem, each naming the line of the file, so
that an import can report *all* problems and write nothing.

Dovecot passwd-file (doc: Dovecot "Passwd-file" authentication database,
https://doc.dovecot.org/configuration_manual/authentication/passwd_file/)::

    user:password:uid:gid:gecos:home:shell:extra_fields

Only ``user`` (and, in practice, ``password``) are needed; a line may have
fewer colons. Lines that are empty or start with ``#`` are skipped, as
Dovecot does. ``extra_fields`` are space-separated ``key=value`` pairs
(everything after the sixth colon, so IPv6 addresses with colons are
fine). The Dovecot "old format", an empty seventh field followed by a mail
location, is recognised and its mail location ignored. What saslnetauth
takes from a line:

* ``password``: a hash in Dovecot's ``{SCHEME}value`` notation; a value
  without ``{SCHEME}`` is read with ``default_scheme`` (Dovecot's
  passwd-file default is ``CRYPT``). A hash saslnetauth cannot verify is an
  error. An empty password field gives a user *without* a password.
* ``allow_nets=NET,NET,...``: the user's networks, for every service.
  ``local`` and ``any`` are accepted as in the rest of saslnetauth; a CIDR
  with host bits set is an error (Dovecot would quietly mask it).
* ``nopassword`` (any value): in Dovecot it accepts *any* password;
  saslnetauth never copies that and imports the user without a password,
  so every login fails until one is set.
* ``fail`` or ``nologin``: the user is imported disabled.
* every other extra field (``userdb_*``, ``proxy``, ``quota_rule``...) is
  ignored and counted; uid, gid, gecos, home and shell are ignored.

CSV (RFC 4180, UTF-8, a header row naming the columns, in any order;
fields with commas, such as ARGON2 hashes, in double quotes)::

    name,password_hash,networks,enabled
    alice,"{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$...",192.0.2.0/24 2001:db8::/32,yes
    bob,{SHA512-CRYPT}$6$...,203.0.113.0/24@smtp+submission local,no

``name`` is required; ``password_hash`` (as ``--hash`` takes it) or
``password`` (plain text, hashed with the configured default scheme) may
be given, not both; an empty cell means no password. ``networks`` holds
networks separated by spaces (commas also work inside a quoted cell); a
network may be limited to services with ``@svc`` and several services are
joined with ``+``: ``192.0.2.0/24@smtp+submission``. ``enabled`` is
``yes``/``no`` (also ``true``/``false``, ``1``/``0``, ``y``/``n``,
``on``/``off``); empty means yes. Unknown columns are an error, so that a
typo never silently drops data.

A user named twice in one file (after lower-casing, if user names are
compared in lower case) is an error on the second line.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from saslnetauth.credentials.passwords import (
    MAX_PASSWORD_BYTES,
    PLAINTEXT_SCHEMES,
    PasswordHasher,
    split_scheme,
)
from saslnetauth.errors import InvalidInputError
from saslnetauth.model import normalize_username
from saslnetauth.netrules import NetworkRule

__all__ = [
    "CSV_COLUMNS",
    "ImportRecord",
    "LineError",
    "ParseResult",
    "parse_csv",
    "parse_passwd_file",
]

#: Columns a CSV import understands.
CSV_COLUMNS = ("name", "password_hash", "password", "networks", "enabled")
#: Dovecot's default scheme for passwd-file values without ``{SCHEME}``.
PASSWD_FILE_DEFAULT_SCHEME = "CRYPT"  # noqa: S105 (a scheme name)
#: Longest line we read; longer lines are errors (Dovecot has no limit, we bound memory).
MAX_LINE = 65536
#: How often (in lines) the progress callback is called.
PROGRESS_EVERY = 1000

_TRUE = frozenset({"yes", "y", "true", "1", "on", ""})
_FALSE = frozenset({"no", "n", "false", "0", "off"})
_DISABLING_FIELDS = frozenset({"fail", "nologin"})
_NET_SPLIT = re.compile(r"[\s,]+")
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


class _Collector:
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


def _lines(text: str | Iterable[str]) -> Iterable[str]:
    return text.splitlines() if isinstance(text, str) else text


def _check_text(value: str, what: str) -> str | None:
    if _SURROGATE.search(value):
        return f"{what} is not valid UTF-8"
    if "\x00" in value:
        return f"{what} contains a NUL character"
    return None


def _name(raw: str, lowercase: bool, problems: list[str]) -> str | None:
    try:
        return normalize_username(raw, lowercase=lowercase)
    except InvalidInputError as exc:
        problems.append(str(exc))
        return None


def _hash(
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


def _add_rule(rules: dict[str, NetworkRule], rule: NetworkRule, problems: list[str]) -> None:
    old = rules.get(rule.spec)
    if old is None:
        rules[rule.spec] = rule
    elif old.services != rule.services:
        problems.append(f"network {rule.spec} given twice with different services")


# -- Dovecot passwd-file -------------------------------------------------------------


def parse_passwd_file(
    text: str | Iterable[str],
    hasher: PasswordHasher,
    *,
    lowercase: bool = True,
    default_scheme: str = PASSWD_FILE_DEFAULT_SCHEME,
    progress: Progress | None = None,
) -> ParseResult:
    """Parse a Dovecot passwd-file (format: see the module docstring)."""
    result = ParseResult()
    users = _Collector(result)
    lineno = 0
    for lineno, raw in enumerate(_lines(text), 1):
        if progress is not None and lineno % PROGRESS_EVERY == 0:
            progress(lineno)
        line = raw.rstrip("\r\n")
        if not line.strip() or line.startswith("#"):
            continue
        problems: list[str] = []
        name, rec = _passwd_line(lineno, line, hasher, lowercase, default_scheme, result, problems)
        result.errors.extend(LineError(lineno, p) for p in problems)
        users.add(lineno, name, rec)
    result.lines = lineno
    return result


def _passwd_line(
    lineno: int,
    line: str,
    hasher: PasswordHasher,
    lowercase: bool,
    default_scheme: str,
    result: ParseResult,
    problems: list[str],
) -> tuple[str | None, ImportRecord | None]:
    if len(line) > MAX_LINE:
        problems.append(f"line longer than {MAX_LINE} characters")
        return None, None
    bad = _check_text(line, "the line")
    if bad:
        problems.append(bad)
        return None, None
    if line.startswith(":"):
        problems.append("no user name before the first ':'")
        return None, None
    parts = line.split(":", 7)
    name = _name(parts[0], lowercase, problems)
    password = parts[1] if len(parts) > 1 else ""
    rest = parts[7] if len(parts) == 8 else ""
    ignored: Counter[str] = Counter()
    if rest.startswith(":"):  # Dovecot's old format: empty field, then a mail location
        if rest[1:]:
            ignored["userdb_mail"] += 1
        fields: list[str] = []
    else:
        fields = rest.split()
    nets: dict[str, NetworkRule] = {}
    seen_allow_nets = False
    no_password = not password
    disabled = False
    for item in fields:
        key, _, value = item.partition("=")
        if key == "allow_nets":
            if seen_allow_nets:
                problems.append(
                    "allow_nets given twice (Dovecot would require both to match); "
                    "merge them into one list"
                )
            seen_allow_nets = True
            _allow_nets(value, nets, problems)
        elif key == "nopassword":
            no_password = True
        elif key in _DISABLING_FIELDS:
            disabled = True
        else:
            ignored[key or "(empty name)"] += 1
    phash = None
    if not no_password:
        phash = _hash(password, hasher, default_scheme, problems)
    if problems or name is None:
        return name, None
    result.ignored_fields.update(ignored)
    result.no_password += no_password
    result.disabled_by_field += disabled
    result.plaintext_hashes += _is_plaintext(phash)
    return name, ImportRecord(lineno, name, phash, tuple(nets.values()), enabled=not disabled)


def _allow_nets(value: str, nets: dict[str, NetworkRule], problems: list[str]) -> None:
    for item in _NET_SPLIT.split(value.strip()):
        if not item:
            continue
        try:
            rule = NetworkRule.parse(item, scope="user")
        except InvalidInputError as exc:
            problems.append(f"allow_nets: {exc}")
            continue
        _add_rule(nets, rule, problems)


def _is_plaintext(phash: str | None) -> bool:
    return phash is not None and split_scheme(phash)[0] in PLAINTEXT_SCHEMES


# -- CSV ---------------------------------------------------------------------------------


def parse_csv(
    text: str,
    hasher: PasswordHasher,
    *,
    lowercase: bool = True,
    progress: Progress | None = None,
) -> ParseResult:
    """Parse a CSV user list (format: see the module docstring)."""
    result = ParseResult()
    users = _Collector(result)
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    columns: dict[str, int] | None = None
    last = 0
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.errors.append(LineError(reader.line_num, f"malformed CSV: {exc}"))
            if columns is None:
                break
            continue
        if progress is not None and reader.line_num // PROGRESS_EVERY > last:
            last = reader.line_num // PROGRESS_EVERY
            progress(reader.line_num)
        if not any(cell.strip() for cell in row):
            continue
        if columns is None:
            columns = _csv_header(row, start, result)
            if columns is None:
                break
            continue
        problems: list[str] = []
        name, rec = _csv_row(start, row, columns, hasher, lowercase, result, problems)
        result.errors.extend(LineError(start, p) for p in problems)
        users.add(start, name, rec)
    if columns is None and not result.errors:
        result.errors.append(LineError(0, "no header row: the file is empty"))
    result.lines = reader.line_num
    return result


def _csv_header(row: list[str], lineno: int, result: ParseResult) -> dict[str, int] | None:
    names = [cell.strip().lower() for cell in row]
    problems: list[str] = []
    unknown = [n for n in names if n not in CSV_COLUMNS]
    if unknown:
        problems.append(
            f"unknown column(s) {', '.join(map(repr, unknown))}; "
            f"known columns: {', '.join(CSV_COLUMNS)} (the first row must be the header)"
        )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"column(s) given twice: {', '.join(dupes)}")
    if "name" not in names:
        problems.append("the header has no 'name' column")
    if "password" in names and "password_hash" in names:
        problems.append("give either a 'password_hash' or a 'password' column, not both")
    if problems:
        result.errors.extend(LineError(lineno, p) for p in problems)
        return None
    result.plaintext_column = "password" in names
    return {n: i for i, n in enumerate(names)}


def _csv_row(
    lineno: int,
    row: list[str],
    columns: dict[str, int],
    hasher: PasswordHasher,
    lowercase: bool,
    result: ParseResult,
    problems: list[str],
) -> tuple[str | None, ImportRecord | None]:
    if len(row) != len(columns):
        hint = (
            " (quote fields that contain commas, e.g. ARGON2 hashes)"
            if len(row) > len(columns)
            else ""
        )
        problems.append(f"expected {len(columns)} fields, found {len(row)}{hint}")
        return None, None
    for value in row:
        bad = _check_text(value, "a field")
        if bad:
            problems.append(bad)
            return None, None

    def cell(col: str) -> str:
        return row[columns[col]] if col in columns else ""

    name = _name(cell("name").strip(), lowercase, problems)
    phash = None
    plain = None
    if cell("password_hash").strip():
        phash = _hash(cell("password_hash").strip(), hasher, None, problems)
    elif cell("password"):
        plain = cell("password")
        if len(plain.encode("utf-8")) > MAX_PASSWORD_BYTES:
            problems.append(f"password longer than {MAX_PASSWORD_BYTES} bytes")
    nets = _csv_networks(cell("networks"), problems)
    enabled = _csv_bool(cell("enabled"), problems)
    if problems or name is None:
        return name, None
    result.no_password += phash is None and plain is None
    result.plaintext_hashes += _is_plaintext(phash)
    return name, ImportRecord(lineno, name, phash, nets, enabled=enabled, password_plain=plain)


def _csv_networks(value: str, problems: list[str]) -> tuple[NetworkRule, ...]:
    rules: dict[str, NetworkRule] = {}
    for item in _NET_SPLIT.split(value.strip()):
        if not item:
            continue
        net, at, services = item.partition("@")
        if at and not services:
            problems.append(f"networks: {item!r}: no service after '@' (e.g. {net}@smtp+imap)")
            continue
        try:
            rule = NetworkRule.parse(net, services.split("+") if at else None, scope="user")
        except InvalidInputError as exc:
            problems.append(f"networks: {exc}")
            continue
        _add_rule(rules, rule, problems)
    return tuple(rules.values())


def _csv_bool(value: str, problems: list[str]) -> bool:
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    problems.append(f"enabled: {value!r} is not yes or no")
    return True
