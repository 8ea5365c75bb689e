"""Parse a Dovecot passwd-file for ``saslnetauth import passwd-file``. Pure.

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
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from saslnetauth.admin.importers import (
    MAX_LINE,
    NET_SPLIT,
    PROGRESS_EVERY,
    Collector,
    ImportRecord,
    LineError,
    ParseResult,
    Progress,
    add_rule,
    check_hash,
    check_name,
    check_text,
    is_plaintext,
    lines,
)
from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.errors import InvalidInputError
from saslnetauth.policy.rules.netrules import NetworkRule

__all__ = ["PASSWD_FILE_DEFAULT_SCHEME", "parse_passwd_file"]

#: Dovecot's default scheme for passwd-file values without ``{SCHEME}``.
PASSWD_FILE_DEFAULT_SCHEME = "CRYPT"  # noqa: S105 (a scheme name)
_DISABLING_FIELDS = frozenset({"fail", "nologin"})


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
    users = Collector(result)
    lineno = 0
    for lineno, raw in enumerate(lines(text), 1):
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
    bad = check_text(line, "the line")
    if bad:
        problems.append(bad)
        return None, None
    if line.startswith(":"):
        problems.append("no user name before the first ':'")
        return None, None
    parts = line.split(":", 7)
    name = check_name(parts[0], lowercase, problems)
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
        phash = check_hash(password, hasher, default_scheme, problems)
    if problems or name is None:
        return name, None
    result.ignored_fields.update(ignored)
    result.no_password += no_password
    result.disabled_by_field += disabled
    result.plaintext_hashes += is_plaintext(phash)
    return name, ImportRecord(lineno, name, phash, tuple(nets.values()), enabled=not disabled)


def _allow_nets(value: str, nets: dict[str, NetworkRule], problems: list[str]) -> None:
    for item in NET_SPLIT.split(value.strip()):
        if not item:
            continue
        try:
            rule = NetworkRule.parse(item, scope="user")
        except InvalidInputError as exc:
            problems.append(f"allow_nets: {exc}")
            continue
        add_rule(nets, rule, problems)
