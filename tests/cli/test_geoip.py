"""Country and ASN terms through the real console script: where networks are
accepted (user net add, net add, --net, CSV import, --json), `check`'s
explanation, `geoip lookup` / `geoip status` and their exit codes, and the
passwd-file export's note."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support.clitools import init_with_user, run
from tests.support.geoipdb import write_asns, write_countries

PW = "s3cret pw"


@pytest.fixture
def dbs(tmp_path: Path) -> tuple[Path, Path]:
    return (
        write_countries(tmp_path / "country.mmdb", {"192.0.2.0/25": "DE", "2001:db8:1::/48": "NL"}),
        write_asns(tmp_path / "asn.mmdb", {"192.0.2.0/24": 3320}),
    )


def _config(tmp_path: Path, country: Path | str = "", asn: Path | str = "", extra: str = "") -> str:
    cfg = tmp_path / "geo.toml"
    cfg.write_text(
        "[passwords]\nargon2_memory_kib = 256\nargon2_time_cost = 1\n"
        f'[geoip]\ncountry_db = "{country}"\nasn_db = "{asn}"\n{extra}'
    )
    cfg.chmod(0o600)
    return str(cfg)


def test_terms_wherever_a_network_is_accepted(sqlite_url: str, tmp_path: Path) -> None:
    db = init_with_user(sqlite_url, "alice", PW, "country:de", "AS3320")
    r = run("user", "net", "add", "alice", "asn:64500", "--service", "imap", db=db)
    assert r.code == 0 and "network asn:64500 added (imap)" in r.out, r.err
    r = run("net", "add", "Country:nl", "--comment", "office abroad", db=db)
    assert r.code == 0 and "global network country:NL added" in r.out, r.err
    r = run("user", "net", "add", "alice", "country:UK", db=db)
    assert r.code == 1 and "did you mean country:GB?" in r.err
    r = run("net", "add", "asn:0", db=db)
    assert r.code == 1 and "an autonomous system number is 1 to 4294967295" in r.err
    r = run("user", "net", "add", "alice", "AS3320", db=db)  # same term, canonical form
    assert r.code == 1 and "already has network asn:3320" in r.err
    shown = json.loads(run("user", "show", "alice", "--json", db=db).out)
    assert [(n["network"], n["services"]) for n in shown["networks"]] == [
        ("country:DE", []),
        ("asn:3320", []),
        ("asn:64500", ["imap"]),
    ]
    listed = json.loads(run("net", "list", "--json", db=db).out)
    assert listed[0]["network"] == "country:NL" and listed[0]["valid"]
    assert run("user", "net", "del", "alice", "asn:64500", db=db).code == 0

    csv = tmp_path / "users.csv"
    csv.write_text("name,password,networks\nbob,pw1,country:fr as64500@imap+pop3 192.0.2.0/24\n")
    r = run("import", "csv", str(csv), db=db, env={"SASLNETAUTH_CONFIG": _config(tmp_path)})
    assert r.code == 0, r.err
    bob = json.loads(run("user", "show", "bob", "--json", db=db).out)
    assert [(n["network"], n["services"]) for n in bob["networks"]] == [
        ("country:FR", []),
        ("asn:64500", ["imap", "pop3"]),
        ("192.0.2.0/24", []),
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("name,password,networks\ncarol,pw,country:XX\n")
    r = run("import", "csv", str(bad), db=db)
    assert r.code == 1 and "not an ISO 3166-1 alpha-2 country code" in r.out + r.err


def test_check_explains_the_lookup(sqlite_url: str, tmp_path: Path, dbs: tuple[Path, Path]) -> None:
    db = init_with_user(sqlite_url, "alice", PW, "country:DE")
    cfg = _config(tmp_path, *dbs)

    def check(rip: str, config: str = cfg) -> tuple[int, str]:
        r = run(
            "--config",
            config,
            "check",
            "alice",
            "--rip",
            rip,
            "--password-stdin",
            db=db,
            stdin=PW + "\n",
        )
        return r.code, r.out

    code, out = check("192.0.2.9")
    assert code == 0 and "allowed by: user network country:DE" in out
    assert "geoip: country DE, AS3320 (found)" in out
    code, out = check("::ffff:192.0.2.200")
    assert code == 1 and "geoip: AS3320 (unknown)" in out
    assert f"country database {dbs[0]} does not know 192.0.2.200" in out
    code, out = check("192.0.2.9", _config(tmp_path, tmp_path / "gone.mmdb", dbs[1]))
    assert code == 1 and "NOT LOADED (cannot read it: No such file or directory)" in out
    assert "its terms match nothing" in out
    code, out = check("192.0.2.9", _config(tmp_path))
    assert code == 1
    assert "no [geoip] database is configured: country and ASN terms match nothing" in out


def test_geoip_lookup(tmp_path: Path, dbs: tuple[Path, Path]) -> None:
    env = {"SASLNETAUTH_CONFIG": _config(tmp_path, *dbs)}
    r = run("geoip", "lookup", "::ffff:192.0.2.9", env=env)
    assert r.code == 0, r.err
    assert r.out.splitlines() == [
        "address 192.0.2.9",
        "  country: DE Country DE (network 192.0.2.0/25)",
        "  asn: AS3320 Example Networks 3320 (network 192.0.2.0/24)",
    ]
    r = run("geoip", "lookup", "2001:db8:1::1", "--json", env=env)
    out = json.loads(r.out)
    assert r.code == 1  # the ASN database does not know it
    assert (out["country"], out["asn"], out["status"]) == ("NL", None, "unknown")
    assert out["databases"]["country"]["network"] == "2001:db8:1::/48"
    assert run("geoip", "lookup", "not-an-ip", env=env).code == 1
    none = run("geoip", "lookup", "192.0.2.9", env={"SASLNETAUTH_CONFIG": _config(tmp_path)})
    assert none.code == 1 and "country: no database (not configured)" in none.out


def test_geoip_status(tmp_path: Path, dbs: tuple[Path, Path]) -> None:
    fresh = run("geoip", "status", env={"SASLNETAUTH_CONFIG": _config(tmp_path, *dbs)})
    assert fresh.code == 0, fresh.out
    assert "country database" in fresh.out and "GeoLite2-Country, built" in fresh.out
    old = write_countries(
        tmp_path / "old.mmdb", {"192.0.2.0/24": "DE"}, build_epoch=time.time() - 60 * 86400
    )
    cfg = _config(tmp_path, old, extra="max_age_days = 30\n")
    r = run("geoip", "status", env={"SASLNETAUTH_CONFIG": cfg})
    assert r.code == 1 and "OLDER THAN max_age_days = 30" in r.out
    rows = json.loads(run("geoip", "status", "--json", env={"SASLNETAUTH_CONFIG": cfg}).out)
    assert rows[0]["old"] and rows[0]["loaded"] and 59 < rows[0]["age_days"] < 61
    assert rows[1] == {
        "database": "asn",
        "path": None,
        "loaded": False,
        "error": "not configured",
        "type": None,
        "build_epoch": None,
        "age_days": None,
        "old": False,
    }
    never = _config(tmp_path, old, extra="max_age_days = 0\n")
    assert run("geoip", "status", env={"SASLNETAUTH_CONFIG": never}).code == 0
    gone = _config(tmp_path, tmp_path / "gone.mmdb")
    r = run("geoip", "status", env={"SASLNETAUTH_CONFIG": gone})
    assert r.code == 1 and "NOT LOADED" in r.out
    assert run("geoip", "status", env={"SASLNETAUTH_CONFIG": _config(tmp_path)}).code == 0
    bad = _config(tmp_path, "relative/country.mmdb")
    r = run("geoip", "status", env={"SASLNETAUTH_CONFIG": bad})
    assert r.code == 1 and "geoip.country_db: an absolute path" in r.err


def test_export_leaves_terms_out_and_says_so(sqlite_url: str, tmp_path: Path) -> None:
    db = init_with_user(sqlite_url, "alice", PW, "country:DE", "192.0.2.0/24")
    init_with_user(db, "bob", PW, "asn:3320")
    out = tmp_path / "passwd"
    r = run("export", "dovecot-passwd-file", str(out), db=db)
    assert r.code == 0, r.err
    text = out.read_text()
    assert "alice:" in text and "allow_nets=192.0.2.0/24\n" in text
    assert "bob:" in text and "allow_nets=255.255.255.255/32" in text
    assert "country" not in text and "asn" not in text
    assert "note: 2 country/ASN term(s) left out" in r.err + r.out
