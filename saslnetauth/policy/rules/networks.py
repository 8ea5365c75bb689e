"""One network rule's text: parsed to its canonical spec and CIDR blocks. Pure,
standard library only.

A rule is an IPv4 or IPv6 address or CIDR network, ``local`` (a login with no
client address), ``any`` (0.0.0.0/0 and ::/0) or a country/ASN term
(:mod:`saslnetauth.policy.rules.netterms`). A CIDR with host bits set is refused,
naming the network it probably meant; an IPv4-mapped network is read as IPv4.
The rules built from them and their matching are in
:mod:`saslnetauth.policy.rules.netrules`.
"""

from __future__ import annotations

from typing import NamedTuple

from saslnetauth.errors import InvalidNetworkError
from saslnetauth.policy.rules.addresses import MAX_NETWORK_TEXT, Address, int_to_text, parse_ip
from saslnetauth.policy.rules.netterms import is_geo_term, parse_term

__all__ = ["ANY", "LOCAL", "Network", "parse_network"]

LOCAL = "local"
ANY = "any"


class Network(NamedTuple):
    """One CIDR block: IP version, prefix length and network address."""

    version: int
    prefixlen: int
    value: int

    def __str__(self) -> str:
        return f"{int_to_text(self.version, self.value)}/{self.prefixlen}"

    def contains(self, addr: Address) -> bool:
        if addr.version != self.version:
            return False
        bits = 32 if self.version == 4 else 128
        shift = bits - self.prefixlen
        return (addr.value >> shift) == (self.value >> shift)


def parse_network(text: str) -> tuple[str, tuple[Network, ...], bool]:
    """Parse one network rule text.

    Returns ``(canonical spec, networks, is_local)``. Raises
    :class:`InvalidNetworkError` with a message fit for an admin.
    """
    if not isinstance(text, str):
        raise InvalidNetworkError(f"network must be text, not {type(text).__name__}")
    raw = text.strip()
    if not raw:
        raise InvalidNetworkError("empty network")
    if len(raw) > MAX_NETWORK_TEXT:
        raise InvalidNetworkError(f"network too long ({len(raw)} characters)")
    low = raw.lower()
    if low == LOCAL:
        return LOCAL, (), True
    if low == ANY:
        return ANY, (Network(4, 0, 0), Network(6, 0, 0)), False
    if is_geo_term(low):
        return parse_term(raw, low), (), False
    addr_text, slash, plen_text = raw.partition("/")
    addr = parse_ip(addr_text)
    if addr is None:
        raise InvalidNetworkError(
            f"invalid network {raw!r}: expected an IP address, a CIDR such as "
            "192.0.2.0/24 or 2001:db8::/32, 'local', 'any', country:DE or asn:3320"
        )
    mapped = ":" in addr_text and addr.version == 4
    full = 32 if addr.version == 4 else 128
    prefixlen = _prefix_length(raw, plen_text, mapped, full) if slash else full
    host_mask = (1 << (full - prefixlen)) - 1
    if addr.value & host_mask:
        meant = Network(addr.version, prefixlen, addr.value & ~host_mask)
        raise InvalidNetworkError(
            f"invalid network {raw!r}: host bits are set; did you mean {meant}?"
        )
    net = Network(addr.version, prefixlen, addr.value)
    if mapped or addr.version == 6:
        text_addr = int_to_text(addr.version, addr.value)
    else:
        # inet_pton accepted exactly four decimal parts without leading zeros:
        # the text is already canonical (saves inet_ntop on a 100,000-row load)
        text_addr = addr_text.partition("%")[0]
    spec = text_addr if prefixlen == full else f"{text_addr}/{prefixlen}"
    return spec, (net,), False


def _prefix_length(raw: str, plen_text: str, mapped: bool, full: int) -> int:
    """The prefix length after the slash of ``raw`` (an IPv4-mapped one as IPv4's)."""
    # ASCII digits only: str.isdigit() also admits U+00B2 (int() refuses it) and
    # U+0668 or U+FF18 (int() reads them as 8); none of them is a network text
    if not (plen_text.isascii() and plen_text.isdigit()) or len(plen_text) > 3:
        raise InvalidNetworkError(f"invalid prefix length in {raw!r}")
    prefixlen = int(plen_text)
    if mapped:  # ::ffff:192.0.2.0/120 is 192.0.2.0/24
        if prefixlen < 96 or prefixlen > 128:
            raise InvalidNetworkError(
                f"invalid network {raw!r}: an IPv4-mapped network needs a prefix of 96..128"
            )
        prefixlen -= 96
    if prefixlen > full:
        raise InvalidNetworkError(
            f"invalid prefix length /{plen_text} in {raw!r} (at most /{full})"
        )
    return prefixlen
