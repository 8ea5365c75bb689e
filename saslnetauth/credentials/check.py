"""Checking the main password of a user: its stored hash or PAM (engine, step 1).

Every outcome but a ready answer spends one verification: a user without a
usable hash, or a PAM user while PAM is off, gets the dummy hash, so the work
done does not tell these cases apart."""

from __future__ import annotations

import logging
from typing import Protocol

from saslnetauth.credentials.passwords import ParsedHash, PasswordHasher
from saslnetauth.errors import BackendError, InvalidHashError
from saslnetauth.logfmt import kv
from saslnetauth.policy.model import UserRecord
from saslnetauth.policy.verdict import Decision, Reason, Verdict

__all__ = ["PamVerifier", "check_credentials"]

log = logging.getLogger("saslnetauth.auth")


class PamVerifier(Protocol):
    """Checks a password with PAM; raises BackendError on PAM failure."""

    def verify(self, user: str, password: bytes, rip: str | None, service: str) -> bool: ...


def check_credentials(
    hasher: PasswordHasher,
    pam: PamVerifier | None,
    user: UserRecord,
    secret: bytes,
    rip: str | None,
    service: str,
) -> tuple[bool, ParsedHash | None] | Decision:
    """(password right?, the parsed stored hash or None for PAM), or a ready
    Decision (TEMPFAIL, no password)."""
    if user.backend == "pam":
        if pam is None:
            hasher.dummy_verify(secret)
            return Decision(
                Verdict.TEMPFAIL,
                Reason.BACKEND_ERROR,
                user.name,
                detail="user uses PAM but PAM is not enabled",
            )
        try:
            return pam.verify(user.name, secret, rip, service), None
        except BackendError as exc:
            return Decision(Verdict.TEMPFAIL, Reason.BACKEND_ERROR, user.name, detail=str(exc))
    if user.password_hash is None:
        hasher.dummy_verify(secret)
        return Decision(Verdict.FAIL, Reason.NO_PASSWORD, user.name)
    try:
        parsed = hasher.parse(user.password_hash)
        ok = hasher.verify(secret, parsed)
    except InvalidHashError as exc:
        hasher.dummy_verify(secret)
        log.error("%s", kv("unusable password hash", user=user.name, error=str(exc)))
        return Decision(
            Verdict.TEMPFAIL, Reason.BACKEND_ERROR, user.name, detail="unusable password hash"
        )
    except BackendError as exc:  # e.g. no memory for an ARGON2 hash: not a wrong password
        log.error("%s", kv("password verification failed", user=user.name, error=str(exc)))
        return Decision(Verdict.TEMPFAIL, Reason.BACKEND_ERROR, user.name, detail=str(exc))
    return ok, parsed
