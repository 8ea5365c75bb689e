"""One login attempt as every hop sees it: built once by a frontend (the auth
socket's session, checkpassword, the policy endpoint, ``saslnetauth check``),
then handed unchanged to the engine, the log line, the verdict record, the
alerts and the brakes. Pure, standard library and the pure core only.

The client address is parsed here, once (:func:`~saslnetauth.policy.rules.addresses.parse_address`:
IPv4-mapped IPv6 as IPv4, zones dropped, anything unparsable absent); the raw
text is kept only for the log line of an address that does not parse. The
password never shows in ``repr`` or ``str``; of it the login names only the
public identifier of the app password it has the shape of (``credential``),
which is all the classification reads (never the secret).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from saslnetauth.credentials.apptokens import parse_token
from saslnetauth.policy.rules.addresses import Address, parse_address

__all__ = ["MAX_SERVICE", "Login", "clean_service"]

#: Longest service name kept (longer ones are cut).
MAX_SERVICE = 32


def clean_service(service: str | None) -> str:
    """The service as the policy reads it: stripped, lower case, at most
    :data:`MAX_SERVICE` characters; empty when absent or not printable."""
    if not service:
        return ""
    s = service.strip().lower()
    return s[:MAX_SERVICE] if s.isprintable() else ""


@dataclass(frozen=True, slots=True)
class Login:
    """One login attempt. ``address`` is the parsed client address (None: absent or
    unparsable, which matches only ``local``), ``rip`` the text it came as;
    ``real_rip`` the connecting address as the frontend reported it apart from the
    forwarded ``rip`` (Dovecot's ``real_rip``; None: not reported), which
    :mod:`saslnetauth.policy.proxies` reads to say which address is judged.
    ``credential`` is the public identifier of the app password the password has
    the shape of (None: the main password). ``arrival`` and ``deadline`` are on the
    monotonic clock (the deadline: when the server answers it TEMPFAIL anyway).
    ``repeat``: its password repeats a recent wrong one of this client and user
    (:mod:`saslnetauth.serve.decide.repeats`), logged ``repeat=yes`` if it fails on it
    again. ``retired_by``: a wrong password may be checked against the user's retired
    ones until this monotonic time (0: not at all)."""

    user: str
    password: bytes = field(repr=False)
    address: Address | None
    rip: str | None
    service: str
    real_rip: str | None = None
    credential: str | None = None
    arrival: float = 0.0
    deadline: float = math.inf
    repeat: bool = False
    retired_by: float = 0.0

    @classmethod
    def of(
        cls,
        user: str,
        password: bytes | str,
        rip: str | None,
        service: str | None,
        *,
        real_rip: str | None = None,
        arrival: float | None = None,
        deadline: float = math.inf,
        repeat: bool = False,
        retired_by: float = 0.0,
    ) -> Login:
        """The login of these texts, parsed: the one place a client address is read."""
        secret = (
            password.encode("utf-8", "surrogateescape") if isinstance(password, str) else password
        )
        token = parse_token(secret) if secret else None
        return cls(
            user,
            secret,
            parse_address(rip),
            rip,
            clean_service(service),
            real_rip or None,
            None if token is None else token[0],
            time.monotonic() if arrival is None else arrival,
            deadline,
            repeat,
            retired_by,
        )

    @property
    def shown_rip(self) -> str:
        """The client address as logged: canonical (``::ffff:192.0.2.1`` is
        ``192.0.2.1``; Exim's expanded IPv6 is compressed), the raw text when it
        does not parse (cleaned by the formatter), ``-`` when absent."""
        return str(self.address) if self.address is not None else (self.rip or "-")
