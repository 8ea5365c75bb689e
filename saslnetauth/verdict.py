"""The one verdict type shared by every frontend.

Like Postfix's xsasl plug-ins (DONE / FAIL / TEMP), Dovecot's checkpassword
(0 / 1 / 111) and Exim (OK / FAIL / DEFER) there are exactly three results.
Every frontend maps :class:`Verdict` to its own wire form; the internal
:class:`Reason` is logged but never shown to a client.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verdict(enum.Enum):
    """Outcome of a login attempt."""

    OK = "ok"
    FAIL = "fail"
    TEMPFAIL = "tempfail"


class Reason(enum.Enum):
    """Why the engine reached its verdict (logged, never sent to clients)."""

    OK = "ok"
    UNKNOWN_USER = "unknown_user"
    BAD_PASSWORD = "bad_password"  # noqa: S105 - a reason code, not a password
    NO_PASSWORD = "no_password"  # noqa: S105 - user has no usable hash
    DISABLED = "disabled"
    NETWORK = "network"
    NO_NETWORK_RULES = "no_network_rules"
    INVALID_REQUEST = "invalid_request"
    BACKEND_ERROR = "backend_error"


@dataclass(frozen=True, slots=True)
class Decision:
    """The engine's answer to one login attempt.

    ``user`` is the canonical user name (as stored) when the user exists,
    otherwise the name as given, normalised. ``matched`` describes the
    network rule that admitted the login (``None`` unless ``OK``).
    ``credentials_valid`` is true when the password was right, whatever
    the verdict: a correct password from a forbidden network is the loud
    "likely stolen credentials" event.
    """

    verdict: Verdict
    reason: Reason
    user: str
    credentials_valid: bool = False
    matched: str | None = None
    detail: str | None = None
    #: Whether the client address is in the user's networks (None: not checked).
    network_ok: bool | None = None

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK
