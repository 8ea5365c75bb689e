"""A country term behind a real Postfix (Debian 12's 3.7 and Debian 13's 3.10): dora
may log in from Germany only. The test's own GeoIP database places the loopback
source 127.0.0.2 in Germany and 127.0.0.3 in France; Postfix's smtpd passes the
client address to saslnetauth serve (smtpd_sasl_type = dovecot, the shipped
main.cf), which looks it up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ALLOWED_IP, DENIED_IP, PostfixInstance, require_source_addresses
from tests.support.clitools import init_with_user
from tests.support.geoipdb import write_asns, write_countries
from tests.support.roots import HOST, Root, trixie
from tests.support.serverproc import ServerProcess, run_server

pytestmark = pytest.mark.peer

PW = "P0stfix-geo-pw"


@pytest.fixture(scope="module", params=["debian12", "debian13"])
def root(request: pytest.FixtureRequest) -> Root:
    return HOST if request.param == "debian12" else trixie()


@pytest.fixture(scope="module")
def peer_dir(root: Root) -> Iterator[Path]:
    require_source_addresses(ALLOWED_IP, DENIED_IP)
    with root.tmpdir("sna-pfgeo-") as d:
        yield d


@pytest.fixture(scope="module")
def server(peer_dir: Path, root: Root) -> Iterator[ServerProcess]:
    db = init_with_user(f"sqlite:///{peer_dir}/geo.db", "dora", PW, "country:DE")
    country = write_countries(
        peer_dir / "country.mmdb", {f"{ALLOWED_IP}/32": "DE", f"{DENIED_IP}/32": "FR"}
    )
    asn = write_asns(peer_dir / "asn.mmdb", {"127.0.0.0/24": 64496})
    uid = root.user_ids("postfix")[0]  # Debian 13's smtpd has that tree's uid
    cfg = peer_dir / "serve.toml"
    cfg.write_text(
        '[serve]\nsocket_mode = "0666"\npenalty_max = 0\n'
        f'allowed_users = ["root", "postfix", "{uid}"]\n'
        f'[geoip]\ncountry_db = "{country}"\nasn_db = "{asn}"\n'
    )
    with run_server(db, config=cfg, failure_delay=0.5, workdir=peer_dir) as srv:
        yield srv


@pytest.fixture(scope="module")
def postfix(peer_dir: Path, server: ServerProcess, root: Root) -> Iterator[PostfixInstance]:
    assert server.unix
    with PostfixInstance(peer_dir / "postfix", root.inside(server.unix), root=root) as pf:
        yield pf


def test_country_term_admits_germany_and_refuses_france(
    postfix: PostfixInstance, server: ServerProcess
) -> None:
    assert postfix.login(ALLOWED_IP, "dora", PW) == (235, "2.7.0 Authentication successful")
    refused = postfix.login(DENIED_IP, "dora", PW)
    assert refused[0] == 535 and refused[1].startswith("5.7.8 Error: authentication failed")
    # indistinguishable from a wrong password from the allowed country
    assert refused == postfix.login(ALLOWED_IP, "dora", "wrong")
    log = server.log()
    assert (
        f'auth ok: user=dora service=smtp rip={ALLOWED_IP} rule="user network country:DE '
        '(all services)"' in log
    )
    assert (
        f"auth fail: user=dora service=smtp rip={DENIED_IP} reason=network "
        "credentials_valid=yes country=FR asn=64496" in log
    )
