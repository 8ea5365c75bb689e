"""Country and ASN terms of the network rules (``country:DE``, ``asn:3320``):
their parsing, with precise errors, and :class:`Geo`, where an address is.
Pure, standard library only; matched by :mod:`saslnetauth.policy.rules.netrules`."""

from __future__ import annotations

import re
from typing import NamedTuple

from saslnetauth.errors import InvalidNetworkError

__all__ = [
    "ASN_PREFIX",
    "COUNTRY_CODES",
    "COUNTRY_PREFIX",
    "MAX_ASN",
    "Geo",
    "is_geo_term",
    "parse_term",
]

COUNTRY_PREFIX = "country:"
ASN_PREFIX = "asn:"
#: Largest autonomous system number (32 bits, RFC 6793); 0 is reserved (RFC 7607).
MAX_ASN = 2**32 - 1
#: The ISO 3166-1 alpha-2 codes officially assigned, and XK (Kosovo, user-assigned,
#: which MaxMind and DB-IP use): the codes the GeoIP databases answer with.
_ISO_3166_ALPHA2 = """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM
    BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX
    CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG
    GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR
    IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV
    LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE
    NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO
    RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF
    TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF
    WS XK YE YT ZA ZM ZW
"""
COUNTRY_CODES = frozenset(_ISO_3166_ALPHA2.split())
#: Codes people write that ISO 3166-1 reserves for something else.
_COUNTRY_MEANT = {"UK": "GB", "EL": "GR"}


class Geo(NamedTuple):
    """Where an address is, as the GeoIP databases say; ``None``: not known."""

    country: str | None = None  # ISO 3166-1 alpha-2, upper case
    asn: int | None = None


def is_geo_term(text: str) -> bool:
    """Whether ``text`` is meant as a country or ASN term (no address starts with
    ``co`` or ``as``: neither pair is hexadecimal)."""
    return text[:2].lower() in ("co", "as")


def parse_term(raw: str, low: str) -> str:
    """The canonical text of a ``country:`` or ``asn:`` term (InvalidNetworkError)."""
    if low.startswith("co"):
        code = raw[len(COUNTRY_PREFIX) :].strip().upper()
        if not low.startswith(COUNTRY_PREFIX) or not code:
            raise InvalidNetworkError(
                f"invalid term {raw!r}: write a country as country:DE (an ISO 3166-1 alpha-2 code)"
            )
        if code in COUNTRY_CODES:
            return COUNTRY_PREFIX + code
        meant = _COUNTRY_MEANT.get(code)
        hint = f"; did you mean country:{meant}?" if meant else ""
        raise InvalidNetworkError(
            f"invalid country {raw!r}: not an ISO 3166-1 alpha-2 country code "
            f"(two letters such as DE, FR, GB){hint}"
        )
    digits = (low[3:].removeprefix(":") if low.startswith("asn") else low[2:]).strip()
    if digits.startswith("as"):  # asn:AS3320
        digits = digits[2:]
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 10:
        dot = re.fullmatch(r"(\d{1,5})\.(\d{1,5})", digits)
        if dot and int(dot[1]) < 65536 and int(dot[2]) < 65536:
            value = (int(dot[1]) << 16) + int(dot[2])
            raise InvalidNetworkError(
                f"invalid ASN {raw!r}: write the number as asn:{value} (asdot notation "
                "is not accepted)"
            )
        raise InvalidNetworkError(
            f"invalid ASN {raw!r}: write an autonomous system as asn:3320 or AS3320"
        )
    asn = int(digits)
    if not 0 < asn <= MAX_ASN:
        raise InvalidNetworkError(
            f"invalid ASN {raw!r}: an autonomous system number is 1 to {MAX_ASN}"
        )
    return f"{ASN_PREFIX}{asn}"
