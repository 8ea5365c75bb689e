"""Dovecot's tab-escaping of field values (``\\x01`` is the escape byte).

Its own module, importing nothing, because the checkpassword fast path
(:mod:`saslnetauth.dovecot.client`) needs :func:`unescape` on every login and
the codec in :mod:`saslnetauth.dovecot.protocol` pulls in ``dataclasses`` and
``secrets``.
"""

from __future__ import annotations

__all__ = ["escape", "unescape"]

_ESCAPES = {"\x01": "\x011", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n", "\x00": "\x010"}
_UNESCAPES = {"0": "\x00", "1": "\x01", "t": "\t", "r": "\r", "n": "\n", "l": "\n"}


def escape(value: str) -> str:
    """Dovecot tab-escaping of one field value."""
    if not any(c in value for c in _ESCAPES):
        return value
    return "".join(_ESCAPES.get(c, c) for c in value)


def unescape(value: str) -> str:
    """Inverse of :func:`escape`; a trailing lone ``\\x01`` is dropped."""
    if "\x01" not in value:
        return value
    out: list[str] = []
    it = iter(value)
    for c in it:
        if c != "\x01":
            out.append(c)
            continue
        nxt = next(it, None)
        if nxt is not None:
            out.append(_UNESCAPES.get(nxt, nxt))
    return "".join(out)
