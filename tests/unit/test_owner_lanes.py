"""Issue 21 item 3: the flood queue must not tell existing names from unknown ones.

Logins are classified by the credential they name (main password, or the app password
a token's public identifier names) and queued per owner (name and credential), fair in
owners and in client addresses at once. Order is proved by the order in which
verifications reach the decider, never by timing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from saslnetauth.config import Config
from saslnetauth.credentials.apptokens import new_token
from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.policy.classification import Classified, refusal
from saslnetauth.policy.login import Login
from saslnetauth.policy.rules.netrules import NetworkRule
from saslnetauth.policy.verdict import Reason
from saslnetauth.serve.decide.classifier import Classifier
from saslnetauth.serve.decide.fairqueue import FairQueue
from saslnetauth.store import SqlStore
from tests.unit.test_scheduler import HOME, OFFICE, OUTSIDE, Harness, until

#: A random-looking token shape naming no app password.
NO_SUCH_TOKEN = "abcd-efgh-jkmn-pqrs-tuvw-xyza-bcde-fghj-kmnp"


def _app(store: SqlStore, user: str, label: str, net: str) -> str:
    rules = [NetworkRule.parse(net, scope=f"app password {label}")]
    return store.add_app_password(user, label, new_token, networks=rules)


@pytest.fixture
def tokens(sqlite_store: SqlStore, fast_hasher: PasswordHasher) -> dict[str, str]:
    """alice (own network HOME), carol and dave (an app password valid from anywhere
    each; dave also has HOME as his own network); the global network is OFFICE."""
    hashed = fast_hasher.hash("pw")
    home = [NetworkRule.parse(HOME, scope="user")]
    sqlite_store.add_user("alice", hashed, networks=home)
    sqlite_store.add_user("carol", hashed)
    sqlite_store.add_user("dave", hashed, networks=home)
    sqlite_store.add_global_network(NetworkRule.parse(OFFICE, scope="global"))
    return {
        "carol": _app(sqlite_store, "carol", "any", "any"),
        "dave": _app(sqlite_store, "dave", "any", "any"),
    }


@pytest.fixture
def lanes_cfg(sqlite_url: str, tokens: dict[str, str]) -> Iterator[Config]:
    c = Config(database_url=sqlite_url)
    c.report.record = False
    c.serve.failure_delay = 2.0
    yield c


def _classify(cfg: Config, cases: list[tuple[str, str, str]]) -> list[Classified]:
    """The classifications of (name, address, password) for smtp: of a password the
    classification reads only the identifier of the token it has the shape of."""

    async def main() -> list[Classified]:
        classifier = Classifier(cfg)
        await classifier.start()
        try:
            return [
                await classifier.triage(Login.of(name, password, rip, "smtp"))
                for name, rip, password in cases
            ]
        finally:
            await classifier.close()

    return asyncio.run(main())


def test_an_app_password_from_anywhere_does_not_make_a_name_stand_out(
    lanes_cfg: Config, tokens: dict[str, str]
) -> None:
    """From outside his own networks, dave (app password ``any``) classifies like an
    unknown name unless the login names that app password by its token's identifier."""
    from saslnetauth.policy.apppolicy import token_id_of

    dave, carol = tokens["dave"], tokens["carol"]
    assert token_id_of(dave.encode()) and token_id_of(carol.encode())
    assert token_id_of(NO_SUCH_TOKEN.encode())
    got = _classify(
        lanes_cfg,
        [
            ("dave", OUTSIDE, "guess"),  # a guess of the main password
            ("ghost", OUTSIDE, "guess"),
            ("dave", OUTSIDE, NO_SUCH_TOKEN),  # no app password of his
            ("dave", OUTSIDE, carol),  # carol's identifier names nothing of dave's
            ("ghost", OUTSIDE, dave),
            ("dave", OUTSIDE, dave),  # his app password, valid from anywhere
            ("dave", "198.51.100.7", "guess"),  # his own network: the main password
            ("dave", "192.0.2.7", "guess"),  # a global network
            ("ghost", "192.0.2.7", "guess"),
        ],
    )
    assert [c.could_succeed for c in got] == [False] * 5 + [True] * 4
    main = [("dave", None), ("ghost", None), ("dave", None), ("dave", None), ("ghost", None)]
    assert [c.owner for c in got[:5]] == main
    assert got[5].app is not None and got[5].owner == ("dave", got[5].app.id)
    assert refusal(got[0]).reason is Reason.NETWORK
    assert refusal(got[1]).reason is Reason.UNKNOWN_USER


def test_an_expired_app_password_admits_nothing(lanes_cfg: Config, sqlite_store: SqlStore) -> None:
    rules = [NetworkRule.parse("any", scope="app password old")]
    token = sqlite_store.add_app_password(
        "carol",
        "old",
        new_token,
        networks=rules,
        expires=978307200.0,  # 2001-01-01
    )
    (c,) = _classify(lanes_cfg, [("carol", OUTSIDE, token)])
    assert not c.could_succeed and c.expired
    refused = refusal(c)
    assert refused.reason is Reason.EXPIRED and refused.credential == "old"


def test_one_users_flood_does_not_delay_another_user_or_an_unknown_name(
    lanes_cfg: Config,
) -> None:
    """carol's guesses from many office addresses fill the queue; dave's and an
    unknown name's logins from the office, queued after all of them, are each verified
    after at most one more of carol's (before: one lane per network and behind every
    other client address in it, so they waited to their deadline)."""

    async def main() -> list[str]:
        h = Harness(lanes_cfg, capacity=1)
        await h.sched.start()
        h.submit("carol-0", "192.0.2.200", user="carol")
        await until(lambda: h.inner.calls == ["carol"], "first")
        for i in range(1, 21):
            h.submit(f"carol-{i}", f"192.0.2.{i}", user="carol")
        await h.classified(20)
        h.submit("dave", "192.0.2.101")
        h.submit("ghost", "192.0.2.102")
        await h.classified(22)
        for _ in range(4):
            h.inner.open(h.inner.calls[-1])
            n = len(h.inner.calls)
            await until(lambda n=n: len(h.inner.calls) == n + 1, "next")  # type: ignore[misc]
        calls = list(h.inner.calls)
        for t in h.tasks.values():
            t.cancel()
        await h.sched.close()
        return calls

    calls = asyncio.run(main())
    assert calls[:5] == ["carol", "carol", "dave", "ghost", "carol"], calls


def test_existing_and_unknown_names_wait_alike_under_a_flood_from_outside(
    lanes_cfg: Config,
) -> None:
    """carol's guesses from outside (her app password is valid from anywhere, but the
    guesses name no app password) cannot succeed: they do not hold the queue of logins
    that could, and dave's and an unknown name's guesses from outside take the same
    lane as hers."""

    async def main() -> tuple[list[str], int, int]:
        h = Harness(lanes_cfg, capacity=2)  # one worker: one slot for hopeless logins
        await h.sched.start()
        h.submit("first", "192.0.2.1")
        await until(lambda: h.inner.calls == ["first"], "first")
        for i in range(8):
            h.submit(f"carol-{i}", f"203.0.113.{i + 10}", user="carol")
        h.submit("dave", OUTSIDE)
        h.submit("ghost", OUTSIDE)
        h.submit("alice", "198.51.100.9")  # her own network: could succeed
        await h.classified(11)
        calls = list(h.inner.calls)
        hopeless, waiting = h.sched.counts.hopeless, h.sched.waiting
        for t in h.tasks.values():
            t.cancel()
        await h.sched.close()
        return calls, hopeless, waiting

    calls, hopeless, waiting = asyncio.run(main())
    assert hopeless == 10  # carol's eight, dave's and the unknown name's
    assert calls == ["first", "alice"]  # the hopeless slot is taken: they all wait
    assert waiting == 10


def test_fair_queue_is_fair_in_groups_and_keys_at_once() -> None:
    q: FairQueue[str] = FairQueue(lambda item: False)
    for i in range(50):  # one owner's guesses from fifty addresses
        q.push("carol", i, f"carol{i}")
    for i in range(50):  # one machine's guesses for fifty names
        q.push(f"name{i}", "bot", f"bot{i}")
    q.push("dave", 1000, "dave")
    q.push("erin", 7, "erin")  # an address carol's guesses also come from
    order = [q.pop() for _ in range(6)]
    assert order == ["carol0", "bot0", "dave", "carol1", "bot1", "erin"]
    # a newcomer later is taken within one round of what waits
    q.push("fred", 2000, "fred")
    assert [q.pop() for _ in range(3)] == ["carol2", "bot2", "fred"]
    rest = [q.pop() for _ in range(len(q))]
    assert len(rest) == 47 + 47 and q.pop() is None
    assert rest[:4] == ["carol3", "bot3", "carol4", "bot4"]
