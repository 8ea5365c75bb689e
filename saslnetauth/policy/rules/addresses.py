"""Client addresses as the policy contract reads them: IPv4-mapped IPv6 as
IPv4, zones dropped, anything unparsable absent. Pure, standard library only."""

from __future__ import annotations

import socket
from typing import NamedTuple

__all__ = ["MAX_NETWORK_TEXT", "Address", "client_key", "int_to_text", "parse_address", "parse_ip"]

#: Longest network text we accept (an IPv6 address with zone and prefix fits).
MAX_NETWORK_TEXT = 128


class Address(NamedTuple):
    """A client address reduced to (IP version, integer value)."""

    version: int  # 4 or 6
    value: int

    def __str__(self) -> str:
        return int_to_text(self.version, self.value)


def int_to_text(version: int, value: int) -> str:
    if version == 4:
        return socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))


def parse_ip(text: str) -> Address | None:
    """Parse an IP address; ``None`` if it does not parse. Zone ids are dropped."""
    if "%" in text:
        text = text.split("%", 1)[0]
    if ":" in text:
        try:
            raw = socket.inet_pton(socket.AF_INET6, text)
        except (OSError, ValueError):
            return None
        value = int.from_bytes(raw, "big")
        if value >> 32 == 0xFFFF:  # ::ffff:a.b.c.d, matched as IPv4
            return Address(4, value & 0xFFFFFFFF)
        return Address(6, value)
    try:
        raw = socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):
        return None
    return Address(4, int.from_bytes(raw, "big"))


def parse_address(text: str | None) -> Address | None:
    """Parse a client address (``rip``) as the policy contract says.

    Returns ``None`` for an absent, empty or unparsable address (which then
    matches only ``local``). Never raises.
    """
    if not text or len(text) > MAX_NETWORK_TEXT:
        return None
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return parse_ip(text)


def client_key(rip: str | None, ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> str | None:
    """The network of ``prefix`` bits around a client address, as text
    (``192.0.2.0/24``); ``None`` for an absent or unparsable address.

    Used to group clients: the penalty box's buckets, the report's networks.
    """
    addr = parse_address(rip)
    if addr is None:
        return None
    prefix = ipv4_prefix if addr.version == 4 else ipv6_prefix
    shift = (32 if addr.version == 4 else 128) - prefix
    return f"{int_to_text(addr.version, (addr.value >> shift) << shift)}/{prefix}"
