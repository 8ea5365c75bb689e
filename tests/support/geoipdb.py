"""Small GeoIP databases (``.mmdb``) made by the tests themselves, with the record
layout of GeoLite2-Country and GeoLite2-ASN (which DB-IP's lite files share),
written with the ``mmdb-writer`` package; nothing is downloaded.

A test maps networks to countries or ASNs, writes the file, and points
``[geoip] country_db`` / ``asn_db`` at it. :func:`replace_atomically` puts a
new file in place the way updaters do (write beside it, then rename)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import mmdb_writer
from netaddr import IPSet

#: The names a GeoLite2 record carries in each of its languages.
LANGUAGES = ("de", "en", "es", "fr", "ja", "pt-BR", "ru", "zh-CN")


def _names(text: str) -> dict[str, str]:
    return {lang: text for lang in LANGUAGES}


def country_record(code: str) -> dict[str, Any]:
    """A GeoLite2-Country record for ``code`` (continent, country, registered country)."""
    country = {"geoname_id": 2921044, "iso_code": code, "names": _names(f"Country {code}")}
    return {
        "continent": {"code": "EU", "geoname_id": 6255148, "names": _names("Europe")},
        "country": country,
        "registered_country": dict(country),
    }


def asn_record(asn: int) -> dict[str, Any]:
    return {
        "autonomous_system_number": asn,
        "autonomous_system_organization": f"Example Networks {asn}",
    }


def write_mmdb(
    path: Path,
    entries: Mapping[str, Any] | Iterable[tuple[str, Any]],
    *,
    database_type: str = "GeoLite2-Country",
    ip_version: int = 6,
    build_epoch: float | None = None,
) -> Path:
    """Write ``entries`` (network text -> record) to ``path``.

    An IPv6 database stores IPv4 networks under ``::/96`` as MaxMind's do.
    ``build_epoch`` (default: now) is the metadata's build time."""
    writer = mmdb_writer.MMDBWriter(
        ip_version=ip_version,
        database_type=database_type,
        languages=["en"],
        description=f"saslnetauth test {database_type}",
        ipv4_compatible=ip_version == 6,
        int_type="u32",
    )
    items = entries.items() if isinstance(entries, Mapping) else entries
    for network, record in items:
        writer.insert_network(IPSet([network]), record)
    if build_epoch is None:
        writer.to_db_file(str(path))
    else:
        clock = mock.Mock(time=lambda: build_epoch)
        with mock.patch.object(mmdb_writer, "time", clock):
            writer.to_db_file(str(path))
    return path


def write_countries(path: Path, networks: Mapping[str, str], **kw: Any) -> Path:
    """A country database: network text -> ISO code."""
    return write_mmdb(path, {n: country_record(c) for n, c in networks.items()}, **kw)


def write_asns(path: Path, networks: Mapping[str, int], **kw: Any) -> Path:
    """An ASN database: network text -> autonomous system number."""
    kw.setdefault("database_type", "GeoLite2-ASN")
    return write_mmdb(path, {n: asn_record(a) for n, a in networks.items()}, **kw)


def replace_atomically(target: Path, source: Path) -> None:
    """Rename ``source`` over ``target`` (a new inode, as ``geoipupdate`` does); the
    modification time is moved on so that a check within the same clock tick sees it."""
    later = time.time() + 2
    os.utime(source, (later, later))
    os.replace(source, target)
