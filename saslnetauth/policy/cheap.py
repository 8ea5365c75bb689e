"""Which logins are cheap to decide: a verification of a few microseconds, with
nothing slow after it (docs/performance.md, "Cheap logins in the server").

The server decides such a login on its classification thread, from the row the
classification has just read, instead of sending it to a decision worker
(:mod:`saslnetauth.serve.decide.inline`). The decision is the engine's own, so it is
the same as a worker's; only where it is computed changes. Cheap are:

- a decision reached without any password work (an empty password, a database
  error the classification met);
- an app password the login names (one keyed SHA-256, :mod:`.apppolicy`);
- a main password stored as ``{PLAIN}``/``{CLEARTEXT}`` (a constant-time
  compare), unless an OK would be rehashed (``rehash_on_login``) or a wrong one
  may be tried against retired passwords (their hashes are slow).

Never cheap: an unknown name (its dummy verification hashes in the default
scheme), PAM, a missing or unusable hash, every slow scheme. Nothing here
depends on whether the password is right except the retired-password case, whose
failure is answered at the same fixed deadline wherever it is decided.
"""

from __future__ import annotations

from typing import Protocol

from saslnetauth.credentials.passwords import PLAINTEXT_SCHEMES, PasswordHasher, split_scheme
from saslnetauth.errors import InvalidHashError
from saslnetauth.policy.apppolicy import named_app_password, named_by_id
from saslnetauth.policy.classification import Classified
from saslnetauth.policy.login import Login
from saslnetauth.policy.model import UserRecord

__all__ = ["CheapView", "cheap_to_decide", "may_be_cheap"]


class CheapView(Protocol):
    """What the test reads of the engine."""

    hasher: PasswordHasher
    rehash_on_login: bool
    retired_days: int


def cheap_to_decide(c: Classified, login: Login, v: CheapView) -> bool:
    """Whether deciding ``login``, classified as ``c``, costs a few microseconds."""
    if c.error is not None or not login.password:
        return True
    user = c.user
    if user is None:  # unknown or invalid name: a dummy hash in the default scheme
        return False
    if named_app_password(user, login.password) is not None:
        return True
    if user.backend != "hash" or user.password_hash is None:
        return False
    try:
        parsed = v.hasher.parse(user.password_hash)
    except InvalidHashError:
        return False
    if not parsed.plaintext:
        return False
    if v.rehash_on_login and v.hasher.needs_rehash(parsed):
        return False
    retired = login.retired_by > 0 and v.retired_days > 0
    return not retired or v.hasher.verify(login.password, parsed)


def may_be_cheap(user: UserRecord | None, login: Login) -> bool:
    """From a row read earlier (no I/O, no password work): whether ``login`` is worth
    trying on the classification thread at all; :func:`cheap_to_decide` decides."""
    if user is None:
        return False
    if named_by_id(user, login.credential) is not None:
        return True
    if user.backend != "hash" or user.password_hash is None:
        return False
    return split_scheme(user.password_hash)[0] in PLAINTEXT_SCHEMES
