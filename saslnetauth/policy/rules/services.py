"""Service lists of the network rules (``smtp,imap``): parsing, display and
storage form. Pure, standard library only."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from saslnetauth.errors import InvalidServiceError

__all__ = ["describe_services", "format_services", "parse_services"]

_SERVICE_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")


def parse_services(value: Iterable[str] | str | None) -> frozenset[str] | None:
    """Parse a service list (comma/space separated text or an iterable).

    ``None``, empty text or an empty iterable mean "every service" and give
    ``None``. Names are lower-cased; each must be a plain word.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return _parse_services_text(value)
    return _parse_services(value)


@functools.lru_cache(maxsize=1024)
def _parse_services_text(value: str) -> frozenset[str] | None:
    """Service lists given as text, remembered: the same few repeat over 100,000
    global networks (invalid ones raise every time, they are not remembered)."""
    return _parse_services(value)


def _parse_services(value: Iterable[str] | str) -> frozenset[str] | None:
    items = re.split(r"[,\s]+", value) if isinstance(value, str) else list(value)
    names: set[str] = set()
    for item in items:
        name = item.strip().lower()
        if not name:
            continue
        if not _SERVICE_RE.match(name):
            raise InvalidServiceError(
                f"invalid service name {item!r}: use a word such as smtp, imap, pop3, submission"
            )
        names.add(name)
    return frozenset(names) if names else None


def describe_services(services: Iterable[str] | None, everything: str = "all services") -> str:
    """Services for people: sorted and comma separated, or ``everything`` when none."""
    return ",".join(sorted(services)) if services else everything


def format_services(services: frozenset[str] | None) -> str | None:
    """Inverse of :func:`parse_services` for storage: sorted, comma separated."""
    if not services:
        return None
    return ",".join(sorted(services))
