"""Where a user's main password may log in (docs/app-passwords.md, "Requiring app passwords"). Pure.

``users.main_password_services`` (``saslnetauth user set NAME
--main-password-services ...``) and ``[passwords] main_password_services``
(the default of every user whose column is NULL) hold one of:

- ``all``: the main password works on every service (the built-in default);
- ``none``: it works nowhere, every login needs an app password;
- a service list such as ``smtp,submission``: only there.

On any other service the right main password is refused: FAIL with reason
``app_password_required``, answered like a wrong password (same reply, same
deadline; :mod:`saslnetauth.policy.engine`). App passwords are never affected: their
own ``services`` decide where they work. A stored text that does not parse
fails closed: the main password then works nowhere (logged by the engine).
"""

from __future__ import annotations

import functools

from saslnetauth.errors import InvalidServiceError
from saslnetauth.policy.rules.services import describe_services, format_services, parse_services

__all__ = [
    "ALL",
    "NONE",
    "describe_main_services",
    "format_main_services",
    "main_password_allows",
    "parse_main_services",
]

ALL = "all"
NONE = "none"


@functools.lru_cache(maxsize=256)
def parse_main_services(text: str) -> frozenset[str] | None:
    """``all`` -> None (every service), ``none`` -> an empty set, else the services.
    InvalidServiceError for anything else (an empty text included)."""
    word = text.strip().lower()
    if word == ALL:
        return None
    if word == NONE:
        return frozenset()
    services = parse_services(word)
    if services is None:
        raise InvalidServiceError('main password services: "all", "none" or a list of services')
    if services & {ALL, NONE}:
        raise InvalidServiceError('main password services: "all" and "none" stand alone')
    return services


def format_main_services(services: frozenset[str] | None) -> str:
    """The stored (and configured) text of :func:`parse_main_services`'s result."""
    if services is None:
        return ALL
    return format_services(services) or NONE


def describe_main_services(services: frozenset[str] | None) -> str:
    """For people: ``all services``, ``no service (app passwords only)`` or the list."""
    if services is not None and not services:
        return "no service (app passwords only)"
    return describe_services(services)


def main_password_allows(stored: str | None, default: frozenset[str] | None, service: str) -> bool:
    """May the main password log in to ``service``? ``stored`` is the user's column
    (None: ``default``, the configured one parsed); a stored text that does not parse
    allows nothing (fail closed)."""
    allowed = default
    if stored is not None:
        try:
            allowed = parse_main_services(stored)
        except ValueError:
            return False
    return allowed is None or service in allowed
