"""Build a Dovecot passwd-file from saslnetauth's users: the Dovecot 2.4 bridge. Pure.

Dovecot 2.4 dropped the checkpassword passdb, so it cannot ask
saslnetauth at login time; instead it can read a passwd-file exported
from saslnetauth (doc: Dovecot "Passwd-file" database and the passdb extra
field ``allow_nets``). One line per user::

    name:{SCHEME}hash::::::allow_nets=192.0.2.0/24,2001:db8::/32,local

``allow_nets`` is the union of the user's networks and the global networks
that apply to *every* service of the export (a rule limited to services is
included only if it covers them all, so the file never admits a login that
saslnetauth would refuse for one of them). ``any`` is written as
``0.0.0.0/0,::/0``; ``local`` stays ``local`` (Dovecot's keyword for a
login without a client address). A user without any applicable network
gets ``allow_nets=255.255.255.255/32`` (:data:`NO_NETWORK`): the limited
broadcast address can never be the source of a TCP connection, so the
line matches no client at all and every login fails, as saslnetauth's own
"fail closed" rule says; ``allow_nets`` is never left out.

Country and ASN terms (``country:DE``, ``asn:3320``) cannot be written:
Dovecot's ``allow_nets`` holds networks only. They are left out and counted
(fail closed: a user admitted only by such terms gets :data:`NO_NETWORK`);
Dovecot 2.4 setups that need them ask saslnetauth at login time instead
(the Lua bridge or the policy endpoint).
Expiring grants: a network whose ``expires_at`` has passed at the time of
the export is left out (counted); a written one stays in the file until the
next export, so the result names the earliest expiry among the written
networks (:attr:`ExportResult.next_expiry`): the export must run again
before then (cron interval).

Skipped (counted, never written): disabled users, PAM users, users without
a password, users whose main password may not log in to every service of
the export (``app_password_required``: the file cannot limit it to some;
docs/app-passwords.md, "Requiring app passwords"), users whose stored hash
saslnetauth cannot verify, and names or
hashes that a passwd-file line cannot hold (a ``:``, a leading ``#``,
white space or control characters in the hash).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.errors import InvalidInputError
from saslnetauth.policy.mainpassword import main_password_allows
from saslnetauth.policy.model import UserRecord
from saslnetauth.policy.rules.netrules import ANY, NetworkRule

__all__ = [
    "DEFAULT_EXPORT_SERVICES",
    "NO_NETWORK",
    "ExportResult",
    "allow_nets",
    "dovecot_passwd_file",
]

#: Services an export is made for when none are named (Dovecot's own logins).
DEFAULT_EXPORT_SERVICES = ("imap", "pop3")
#: ``allow_nets`` value that matches no client (RFC 1122 3.2.1.3: never a source address).
NO_NETWORK = "255.255.255.255/32"
_ANY_NETS = ("0.0.0.0/0", "::/0")


@dataclass
class ExportResult:
    """The file's lines and what was left out."""

    lines: list[str] = field(default_factory=list)
    #: users not written, by reason (disabled, pam, no_password, bad_hash, bad_name).
    skipped: Counter[str] = field(default_factory=Counter)
    #: users written with :data:`NO_NETWORK` (no applicable network).
    no_network: int = 0
    #: network rules left out because they do not cover every service of the export.
    rules_left_out: int = 0
    #: country and ASN terms left out (allow_nets cannot express them).
    terms_left_out: int = 0
    #: network rules left out because they had expired at the time of the export.
    expired_left_out: int = 0
    #: the earliest expiry (UNIX time) among the networks written; None: none expires.
    next_expiry: float | None = None

    @property
    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)


def _covers(rule: NetworkRule, services: frozenset[str]) -> bool:
    return rule.services is None or services <= rule.services


def _is_term(rule: NetworkRule) -> bool:
    return rule.country is not None or rule.asn is not None


def allow_nets(rules: Iterable[NetworkRule], services: frozenset[str]) -> tuple[list[str], int]:
    """Dovecot ``allow_nets`` entries of the rules covering ``services``; country and
    ASN terms are never entries (:func:`terms_covering` counts them).

    Returns (entries in order, without duplicates; number of rules left out for
    their services).
    """
    out: dict[str, None] = {}
    left_out = 0
    for rule in rules:
        if not _covers(rule, services):
            left_out += 1
            continue
        if _is_term(rule):
            continue
        for entry in _ANY_NETS if rule.spec == ANY else (rule.spec,):
            out[entry] = None
    return list(out), left_out


def terms_covering(rules: Iterable[NetworkRule], services: frozenset[str]) -> int:
    """Country and ASN terms that would apply to every service of the export."""
    return sum(1 for rule in rules if _is_term(rule) and _covers(rule, services))


def _line_safe(text: str) -> bool:
    return ":" not in text and text.isprintable() and not text.startswith("#")


def _live(rules: Iterable[NetworkRule], now: float, result: ExportResult) -> list[NetworkRule]:
    """The rules that hold at ``now``; counts the expired ones left out."""
    live = []
    for rule in rules:
        if rule.live(now):
            live.append(rule)
        else:
            result.expired_left_out += 1
    return live


def _note_expiry(
    rules: Iterable[NetworkRule], services: frozenset[str], result: ExportResult
) -> None:
    """Lower ``result.next_expiry`` to the earliest expiry among the rules written."""
    for rule in rules:
        if rule.expires is None or not _covers(rule, services):
            continue
        if result.next_expiry is None or rule.expires < result.next_expiry:
            result.next_expiry = rule.expires


def dovecot_passwd_file(
    users: Iterable[UserRecord],
    global_rules: Iterable[NetworkRule],
    services: Iterable[str],
    hasher: PasswordHasher,
    *,
    now: float | None = None,
    main_default: frozenset[str] | None = None,
) -> ExportResult:
    """Lines of a Dovecot passwd-file for ``services`` at ``now`` (default: the current
    time; format: module docstring); ``main_default``: where the main password may
    log in for users without a setting of their own (None: everywhere)."""
    at = time.time() if now is None else now
    wanted = frozenset(services)
    result = ExportResult()
    global_rules = tuple(global_rules)
    live_globals = _live(global_rules, at, result)
    globals_, global_left_out = allow_nets(live_globals, wanted)
    written = 0
    for user in users:
        reason = _skip_reason(user)
        if reason is None and not all(
            main_password_allows(user.main_password_services, main_default, svc) for svc in wanted
        ):
            reason = "app_password_required"
        if reason is not None:
            result.skipped[reason] += 1
            continue
        assert user.password_hash is not None
        try:
            stored = hasher.parse(user.password_hash).stored
        except InvalidInputError:
            result.skipped["bad_hash"] += 1
            continue
        if not _line_safe(user.name) or not _line_safe(stored) or " " in stored:
            result.skipped["bad_name" if not _line_safe(user.name) else "bad_hash"] += 1
            continue
        own_rules = _live(user.rules, at, result)
        own, left_out = allow_nets(own_rules, wanted)
        _note_expiry(own_rules, wanted, result)
        result.rules_left_out += left_out
        result.terms_left_out += terms_covering(user.rules, wanted)
        nets = list(dict.fromkeys([*own, *globals_]))
        if not nets:
            nets = [NO_NETWORK]
            result.no_network += 1
        result.lines.append(f"{user.name}:{stored}::::::allow_nets={','.join(nets)}")
        written += 1
    result.rules_left_out += global_left_out
    result.terms_left_out += terms_covering(global_rules, wanted)
    if written:
        _note_expiry(live_globals, wanted, result)
    return result


def _skip_reason(user: UserRecord) -> str | None:
    if not user.enabled:
        return "disabled"
    if user.backend != "hash":
        return "pam"
    if user.password_hash is None:
        return "no_password"
    return None
