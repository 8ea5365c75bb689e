"""One-line key=value log records, safe for fail2ban and log tools. Pure.

Untrusted text (user names, addresses sent by clients) is cleaned before
it is logged, like Postfix's ``printable()``: control and non-printable
characters become ``?``, and values with spaces, quotes or ``=`` are
double-quoted with backslash escapes, so one record is always one line
and ``key=value`` pairs always split unambiguously.
"""

from __future__ import annotations

__all__ = ["MAX_VALUE", "kv", "printable"]

#: Longest value logged; longer ones are cut and marked with "...".
MAX_VALUE = 256


def printable(text: str, limit: int = MAX_VALUE) -> str:
    """Replace every non-printable character by ``?`` and cap the length."""
    if len(text) > limit:
        text = text[:limit] + "..."
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "?" for c in text)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = printable(str(value))
    if text == "" or any(c in text for c in ' "=\\'):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def kv(event: str, /, **fields: object) -> str:
    """Format ``event: k1=v1 k2=v2``; fields whose value is None are left out."""
    parts = [f"{key}={_value(val)}" for key, val in fields.items() if val is not None]
    return f"{event}: {' '.join(parts)}" if parts else event
