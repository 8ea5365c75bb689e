"""Parse a CSV user list for ``saslnetauth import csv``. Pure.

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
"""

from __future__ import annotations

import csv
import io

from saslnetauth.admin import importers as imp
from saslnetauth.credentials.passwords import MAX_PASSWORD_BYTES, PasswordHasher
from saslnetauth.errors import InvalidInputError
from saslnetauth.policy.rules.netrules import NetworkRule

__all__ = ["CSV_COLUMNS", "parse_csv"]

#: Columns a CSV import understands.
CSV_COLUMNS = ("name", "password_hash", "password", "networks", "enabled")
_TRUE = frozenset({"yes", "y", "true", "1", "on", ""})
_FALSE = frozenset({"no", "n", "false", "0", "off"})


# -- CSV ---------------------------------------------------------------------------------


def parse_csv(
    text: str,
    hasher: PasswordHasher,
    *,
    lowercase: bool = True,
    progress: imp.Progress | None = None,
) -> imp.ParseResult:
    """Parse a CSV user list (format: see the module docstring)."""
    result = imp.ParseResult()
    users = imp.Collector(result)
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
            result.errors.append(imp.LineError(reader.line_num, f"malformed CSV: {exc}"))
            if columns is None:
                break
            continue
        if progress is not None and reader.line_num // imp.PROGRESS_EVERY > last:
            last = reader.line_num // imp.PROGRESS_EVERY
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
        result.errors.extend(imp.LineError(start, p) for p in problems)
        users.add(start, name, rec)
    if columns is None and not result.errors:
        result.errors.append(imp.LineError(0, "no header row: the file is empty"))
    result.lines = reader.line_num
    return result


def _csv_header(row: list[str], lineno: int, result: imp.ParseResult) -> dict[str, int] | None:
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
        result.errors.extend(imp.LineError(lineno, p) for p in problems)
        return None
    result.plaintext_column = "password" in names
    return {n: i for i, n in enumerate(names)}


def _csv_row(
    lineno: int,
    row: list[str],
    columns: dict[str, int],
    hasher: PasswordHasher,
    lowercase: bool,
    result: imp.ParseResult,
    problems: list[str],
) -> tuple[str | None, imp.ImportRecord | None]:
    if len(row) != len(columns):
        hint = (
            " (quote fields that contain commas, e.g. ARGON2 hashes)"
            if len(row) > len(columns)
            else ""
        )
        problems.append(f"expected {len(columns)} fields, found {len(row)}{hint}")
        return None, None
    for value in row:
        bad = imp.check_text(value, "a field")
        if bad:
            problems.append(bad)
            return None, None

    def cell(col: str) -> str:
        return row[columns[col]] if col in columns else ""

    name = imp.check_name(cell("name").strip(), lowercase, problems)
    phash = None
    plain = None
    if cell("password_hash").strip():
        phash = imp.check_hash(cell("password_hash").strip(), hasher, None, problems)
    elif cell("password"):
        plain = cell("password")
        if len(plain.encode("utf-8")) > MAX_PASSWORD_BYTES:
            problems.append(f"password longer than {MAX_PASSWORD_BYTES} bytes")
    nets = _csv_networks(cell("networks"), problems)
    enabled = _csv_bool(cell("enabled"), problems)
    if problems or name is None:
        return name, None
    result.no_password += phash is None and plain is None
    result.plaintext_hashes += imp.is_plaintext(phash)
    return name, imp.ImportRecord(lineno, name, phash, nets, enabled=enabled, password_plain=plain)


def _csv_networks(value: str, problems: list[str]) -> tuple[NetworkRule, ...]:
    rules: dict[str, NetworkRule] = {}
    for item in imp.NET_SPLIT.split(value.strip()):
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
        imp.add_rule(rules, rule, problems)
    return tuple(rules.values())


def _csv_bool(value: str, problems: list[str]) -> bool:
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    problems.append(f"enabled: {value!r} is not yes or no")
    return True
