"""Known locations in the store on every database (SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations

import time

from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.policy.engine import DecisionEngine
from saslnetauth.policy.locations import KINDS, MAIN_SCOPE
from saslnetauth.policy.login import Login
from saslnetauth.policy.rules.addresses import Address
from saslnetauth.policy.rules.netrules import NetworkRule
from saslnetauth.policy.rules.netterms import Geo
from saslnetauth.store import SqlStore
from saslnetauth.store.locations import LocationMemory, _Key
from saslnetauth.store.purge import purge_locations

PW = "main pass word"


#: Where the test addresses are (the transcript tier uses a real .mmdb file).
COUNTRIES = {"192.0.2": "DE", "198.51.100": "NL", "203.0.113": "DE"}


def locate(addr: Address) -> Geo:
    prefix = str(addr).rpartition(".")[0]
    return Geo(COUNTRIES.get(prefix), 64500 if prefix == "198.51.100" else None)


def _memory(store: SqlStore, **kw: object) -> LocationMemory:
    args: dict[str, object] = {"memory_days": 90, "max_per_user": 200, "locate": locate}
    args.update(kw)
    return LocationMemory(store, KINDS, flush_seconds=60, **args)  # type: ignore[arg-type]


def test_write_read_race_and_purge_on_every_database(
    store: SqlStore, fast_hasher: PasswordHasher
) -> None:
    store.add_user("alice", fast_hasher.hash(PW), networks=[NetworkRule.parse("any")])
    engines = []
    for _ in range(2):  # two servers
        engine = DecisionEngine(store, fast_hasher)
        memory = _memory(store)
        engine.note_place = memory.note
        engines.append((engine, memory))
    try:
        (a, ma), (b, mb) = engines
        assert a.decide(Login.of("alice", PW, "192.0.2.1", "imap")).new_location is None
        ma.flush()
        assert (
            a.decide(Login.of("alice", PW, "198.51.100.1", "imap")).new_location
            == "network,country"
        )
        ma.flush()
        # the other server saw the same place in the same instant and writes it too:
        # its insert meets the unique key and is ignored
        uid = store.get_user("alice").id  # type: ignore[union-attr]
        mb._write({_Key(uid, MAIN_SCOPE, "network", "198.51.100.0/24"): (None, time.time())})
        assert b.decide(Login.of("alice", PW, "198.51.100.3", "imap")).new_location is None
        # 5 places (two networks, two countries, one AS) beyond the 3 kept
        assert purge_locations(store, 90, 3, time.time()) == 2
    finally:
        for _, memory in engines:
            memory.close()
