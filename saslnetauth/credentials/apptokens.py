"""App passwords (per-device credentials): the token, its stored hash, labels. Pure, stdlib.

A token is 36 lower-case letters from :data:`ALPHABET` (23 letters: no
``i``, ``l`` or ``o``, which people confuse with ``1`` and ``0``; no digits,
so a phone keyboard never needs switching), written in nine groups of four
joined by dashes::

    kbqa-tvem-ycsh-pdrw-xnfa-hgzu-tmeq-kvbd-wrxp

- the first :data:`ID_LENGTH` letters (``kbqatve``) are the token's public
  identifier, stored in ``app_passwords.token_id``: it finds the one row to
  check (31.7 bits; unique over all users, a new token is drawn on a clash);
- the other :data:`SECRET_LENGTH` letters are the secret: 29 letters of
  log2(23) = 4.52 bits each, 131 bits from :mod:`secrets`.

The *normalised* token is the 36 letters alone: upper case is read as lower
case (phones capitalise the first letter) and dashes and spaces are
ignored, so ``KBQA TVEM ...`` is the same token. Anything else is not a
token, and is checked as the user's main password.

Stored form (``app_passwords.secret_hash``)::

    sha256:<64 lower-case hex digits of SHA-256(normalised token, ASCII)>

The secret is random and long, so one fast hash is enough (a slow one would
only cost time: nobody can search 2**131 secrets); the comparison is
constant-time (:func:`hmac.compare_digest`). An admin script can create the
same row: see docs/database.md.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from saslnetauth.errors import InvalidInputError

__all__ = [
    "ALPHABET",
    "HASH_PREFIX",
    "ID_LENGTH",
    "MAX_LABEL",
    "SECRET_LENGTH",
    "check_label",
    "format_token",
    "hash_token",
    "new_token",
    "parse_token",
    "valid_hash",
    "valid_token_id",
    "verify_token",
]

#: Letters a token is made of: a-z without i, l and o.
ALPHABET = "abcdefghjkmnpqrstuvwxyz"
#: Letters of the public identifier, then of the secret.
ID_LENGTH = 7
SECRET_LENGTH = 29
TOKEN_LENGTH = ID_LENGTH + SECRET_LENGTH
GROUP = 4
HASH_PREFIX = "sha256:"
#: Longest text that may still be a token (36 letters, 8 dashes, some spaces).
MAX_TOKEN_TEXT = 64
#: Longest label (``app_passwords.label``).
MAX_LABEL = 64

_LETTERS = frozenset(ALPHABET)
_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")


def new_token() -> tuple[str, str, str]:
    """A fresh token: (the text shown once, its token_id, its stored hash)."""
    letters = "".join(secrets.choice(ALPHABET) for _ in range(TOKEN_LENGTH))
    return format_token(letters), letters[:ID_LENGTH], hash_token(letters)


def format_token(letters: str) -> str:
    """The normalised token in groups of four joined by dashes."""
    return "-".join(letters[i : i + GROUP] for i in range(0, len(letters), GROUP))


def parse_token(password: bytes) -> tuple[str, str] | None:
    """``(token_id, normalised token)`` when ``password`` has a token's shape, else None.

    Bounded work: longer input is refused before it is looked at."""
    if len(password) > MAX_TOKEN_TEXT or len(password) < TOKEN_LENGTH:
        return None
    try:
        text = password.decode("ascii")
    except UnicodeDecodeError:
        return None
    letters = text.lower().replace("-", "").replace(" ", "")
    if len(letters) != TOKEN_LENGTH or not _LETTERS.issuperset(letters):
        return None
    return letters[:ID_LENGTH], letters


def hash_token(normalised: str) -> str:
    """The stored form of a normalised token."""
    return HASH_PREFIX + hashlib.sha256(normalised.encode("ascii")).hexdigest()


def verify_token(normalised: str, stored: str) -> bool:
    """Constant-time check of a normalised token against its stored form."""
    return hmac.compare_digest(hash_token(normalised), stored)


def valid_hash(stored: object) -> bool:
    return isinstance(stored, str) and _HASH_RE.match(stored) is not None


def valid_token_id(token_id: object) -> bool:
    return (
        isinstance(token_id, str) and len(token_id) == ID_LENGTH and _LETTERS.issuperset(token_id)
    )


def check_label(label: str) -> str:
    """A label as typed by an admin: 1-64 of letters, digits and ``._@+-``, starting
    with a letter or digit. Returns it, or raises InvalidInputError with the rule."""
    if not isinstance(label, str) or _LABEL_RE.match(label) is None:
        raise InvalidInputError(
            f"invalid label {label!r}: use 1-{MAX_LABEL} letters, digits and . _ @ + -, "
            "starting with a letter or digit (e.g. phone, laptop-2)"
        )
    return label
