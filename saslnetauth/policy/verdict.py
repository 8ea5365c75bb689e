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
    """Why a login got its verdict (logged, counted, recorded; never sent to clients).

    The same value is the ``reason=`` of the log line, the ``reason`` label of
    ``saslnetauth_auth_total`` and the reason in ``saslnetauth report``."""

    OK = "ok"
    # the engine's
    UNKNOWN_USER = "unknown_user"
    BAD_PASSWORD = "bad_password"  # noqa: S105 - a reason code, not a password
    EMPTY_PASSWORD = "empty_password"  # noqa: S105 - refused before any verification
    NO_PASSWORD = "no_password"  # noqa: S105 - user has no usable hash
    DISABLED = "disabled"
    EXPIRED = "expired"  # an app password past its expiry
    #: the right main password on a service where the user must use an app password
    APP_PASSWORD_REQUIRED = "app_password_required"  # noqa: S105 - a reason code
    RETIRED_PASSWORD = "retired_password"  # noqa: S105 - a wrong one: the user's old password
    #: the right password of a credential suspended for sending too much
    SUSPENDED = "suspended"
    NETWORK = "network"
    NO_NETWORK_RULES = "no_network_rules"
    #: a trusted proxy forwarded no client address, and no webmail session of the
    #: user and credential admits it (saslnetauth.policy.binding)
    PROXY_WITHOUT_CLIENT_ADDRESS = "proxy_without_client_address"
    BACKEND_ERROR = "backend_error"
    # a frontend's own (the engine never ran)
    SASL_ERROR = "sasl_error"
    UNSUPPORTED_MECHANISM = "unsupported_mechanism"
    TIMEOUT = "timeout"
    OVERLOAD = "overload"


#: Failures on a wrong password (for a name that exists or not): the ones a repeat of
#: a recent wrong password does not count twice (saslnetauth.serve.decide.repeats).
WRONG_PASSWORD = frozenset({Reason.BAD_PASSWORD, Reason.UNKNOWN_USER, Reason.RETIRED_PASSWORD})


@dataclass(frozen=True, slots=True)
class Decision:
    """The engine's answer to one login attempt.

    ``user`` is the canonical user name (as stored) when the user exists,
    otherwise the name as given, normalised. ``matched`` describes the
    network rule that admitted the login (``None`` unless ``OK``).
    ``credentials_valid`` is true when the password was right, whatever
    the verdict: a correct password from a forbidden network is the loud
    "likely stolen credentials" event. ``credential`` names the app password
    the password was checked as (docs/app-passwords.md).
    """

    verdict: Verdict
    reason: Reason
    user: str
    credentials_valid: bool = False
    matched: str | None = None
    detail: str | None = None
    #: Whether the client address is in the user's networks (None: not checked);
    #: for an unknown user, whether it is in the global networks.
    network_ok: bool | None = None
    #: Seconds the credential check took (hash, dummy hash or PAM).
    verify_seconds: float = 0.0
    #: Where the client address is, for a FAIL when the GeoIP databases are
    #: configured (saslnetauth.policy.rules.geoip): ISO country code and autonomous system, None
    #: when not known, and what the lookup found ("found", "unknown", "unavailable";
    #: None: no lookup).
    country: str | None = None
    asn: int | None = None
    geoip: str | None = None
    #: When the rule in ``matched`` expires (UNIX time); None: permanent or no match.
    expires: float | None = None
    #: The label of the app password the login named (None: the main password).
    credential: str | None = None
    #: For an OK from a place the user (or its app password) was not seen at within
    #: ``[alerts] location_memory_days``: the kinds that are new, comma separated
    #: ("network", "country", "asn"; :mod:`saslnetauth.policy.locations`). None: not new.
    new_location: str | None = None
    #: The trusted proxy the login came through (saslnetauth.policy.proxies); None:
    #: it came directly.
    proxy: str | None = None
    #: For an OK: what admitted it, "own" (the user's own permanent networks) or
    #: "outside" (:func:`saslnetauth.policy.suspension.admitted_by`); the sending limits
    #: of an outside session are tighter.
    admitted: str | None = None

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK
