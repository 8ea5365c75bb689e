"""One-line key=value log records, safe for fail2ban and log tools. Pure.

Untrusted text (user names, addresses sent by clients) is cleaned before
it is logged, like Postfix's ``printable()``: control and non-printable
characters become ``?``, and values with spaces, quotes or ``=`` are
double-quoted with backslash escapes, so one record is always one line
and ``key=value`` pairs always split unambiguously. The password of a
URL (``scheme://user:password@host``, e.g. a database URL inside an error
message) is replaced by ``***`` (:func:`mask_url`) in every value.
"""

from __future__ import annotations

import re

__all__ = ["MAX_VALUE", "kv", "mask_url", "printable"]

#: ``scheme://user:password@``: the password runs to the last ``@`` of the word
#: (an unencoded ``@`` in a password must not leave its tail visible).
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*):[^\s'\"]*@")

#: Longest value logged; longer ones are cut and marked with "...".
MAX_VALUE = 256


def printable(text: str, limit: int = MAX_VALUE) -> str:
    """Replace every non-printable character by ``?`` and cap the length."""
    if len(text) > limit:
        text = text[:limit] + "..."
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else "?" for c in text)


def mask_url(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` shown as ``***``."""
    if "://" not in text:
        return text
    return _URL_PASSWORD.sub(r"\1:***@", text)


#: A value holding one of these is quoted.
_QUOTED = re.compile(r'[ "=\\]')


def _value(value: object) -> str:
    if value is True or value is False:
        return "yes" if value else "no"
    text = value if type(value) is str else str(value)
    if "://" in text:
        text = mask_url(text)
    if len(text) > MAX_VALUE or not text.isprintable():
        text = printable(text)
    if text == "" or _QUOTED.search(text) is not None:
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def kv(event: str, /, **fields: object) -> str:
    """Format ``event: k1=v1 k2=v2``; fields whose value is None are left out."""
    parts = [f"{key}={_value(val)}" for key, val in fields.items() if val is not None]
    return f"{event}: {' '.join(parts)}" if parts else event
