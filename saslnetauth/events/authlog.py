"""The one auth-event logger: every login decision, from every frontend, is one line.

Used by the decision engine and by the frontends for the failures they decide
themselves (SASL errors, timeouts, overload, unsupported mechanisms), so that
every line has the same shape, the canonical client address and a
:class:`~saslnetauth.policy.verdict.Reason` value (the label the metrics and the
report use too)::

    auth ok: user=alice service=smtp rip=192.0.2.9 rule="user network 192.0.2.0/24 (all services)"
    auth ok: user=bob service=imap rip=198.51.100.7 rule=... new_location=network,country country=NL
    auth fail: user=alice service=smtp rip=203.0.113.9 reason=bad_password
    auth ok: user=alice service=imap rip=203.0.113.9 proxy=127.0.0.1 rule=...
    auth fail: user=alice service=smtp rip=- proxy=127.0.0.1 reason=proxy_without_client_address
    auth fail: user=alice service=smtp rip=203.0.113.9 reason=network credentials_valid=yes
    auth fail: user=bob service=imap rip=198.51.100.7 reason=bad_password country=NL asn=64496
    auth fail: user=alice service=imap rip=203.0.113.9 credential=phone reason=bad_password
    auth fail: user=alice service=imap rip=192.0.2.9 repeat=yes reason=bad_password
    auth fail: user=alice service=imap rip=203.0.113.9 reason=retired_password allowed_network=no
    auth tempfail: user=alice service=smtp rip=192.0.2.9 reason=backend_error error="..."

A failure carries ``country=`` and ``asn=`` when the GeoIP databases
(:mod:`saslnetauth.policy.rules.geoip`) know its address; so does an OK from a new place
(``new_location=``: :mod:`saslnetauth.policy.locations`). Passwords are never arguments
here, so they cannot reach a line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from saslnetauth.logfmt import kv
from saslnetauth.policy.login import Login
from saslnetauth.policy.verdict import Decision, Reason, Verdict

__all__ = ["Record", "account", "log_decision"]

log = logging.getLogger("saslnetauth.auth")

_STOLEN = (Reason.NETWORK, Reason.NO_NETWORK_RULES)


#: What records a decision (the verdict record of ``saslnetauth report``).
Record = Callable[[Decision, Login], None]


def account(
    d: Decision,
    login: Login,
    record: Record | None,
    fields: dict[str, object] | None = None,
    *,
    quiet: bool = False,
) -> None:
    """The one way of every decision, whoever made it (the engine, the responder):
    its log line with ``fields`` (unless ``quiet``), then its record; a record that
    fails never fails the login."""
    if not quiet:
        log_decision(d, login, **(fields or {}))
    if record is not None:
        try:
            record(d, login)
        except Exception:
            log.exception("verdict record failed")


def log_decision(d: Decision, login: Login, **extra: object) -> None:
    """Log one decision: INFO for OK and ordinary failures, WARNING for a correct
    password from a forbidden network, a retired password and overload, ERROR for
    other TEMPFAILs."""
    fields: dict[str, object] = {
        "user": d.user or None,
        "service": login.service or None,
        "rip": login.shown_rip,
        "proxy": d.proxy,  # the trusted proxy it came through; None (left out): direct
        "credential": d.credential,  # an app password's label; None (left out): main password
    }
    fields.update(extra)
    if d.verdict is Verdict.OK:
        if d.new_location is None:
            log.info("%s", kv("auth ok", **fields, rule=d.matched))
        else:
            place = {"new_location": d.new_location, "country": d.country, "asn": d.asn}
            log.info("%s", kv("auth ok", **fields, rule=d.matched, **place))
    elif d.verdict is Verdict.TEMPFAIL:
        level = logging.WARNING if d.reason is Reason.OVERLOAD else logging.ERROR
        log.log(level, "%s", kv("auth tempfail", **fields, reason=d.reason.value, error=d.detail))
    elif d.reason is Reason.RETIRED_PASSWORD:
        # a wrong password that was the user's before a change: a stale device on the
        # user's own networks, someone holding the old password elsewhere
        log.warning(
            "%s",
            kv(
                "auth fail",
                **fields,
                reason=d.reason.value,
                allowed_network=d.network_ok,
                country=d.country,
                asn=d.asn,
            ),
        )
    elif d.credentials_valid and d.reason in _STOLEN:
        log.warning(
            "%s",
            kv(
                "auth fail",
                **fields,
                reason=d.reason.value,
                credentials_valid=True,
                country=d.country,
                asn=d.asn,
            ),
        )
    else:
        log.info(
            "%s",
            kv(
                "auth fail",
                **fields,
                reason=d.reason.value,
                error=d.detail,
                country=d.country,
                asn=d.asn,
            ),
        )
