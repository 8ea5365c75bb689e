"""Network-aware scheduling: the real classifier (its own engine on a real SQLite store)
in front of a decider whose verifications finish when the test says so. Order is
proved by the order in which verifications reach the decider, never by timing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

from saslnetauth.config import Config
from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.policy.classification import Classified
from saslnetauth.policy.login import Login
from saslnetauth.policy.rules.netrules import NetworkRule
from saslnetauth.policy.verdict import Decision, Reason, Verdict
from saslnetauth.serve.decide.classifier import Classifier
from saslnetauth.serve.decide.fairqueue import FairQueue
from saslnetauth.serve.decide.scheduler import Scheduler, hopeless_slots
from saslnetauth.store import SqlStore

OFFICE = "192.0.2.0/24"  # global network
HOME = "198.51.100.0/24"  # alice's own network
OUTSIDE = "203.0.113.9"


class GateDecider:
    """Records the order of verifications; each one ends when its gate is opened."""

    def __init__(self, capacity: int, size: int) -> None:
        self.capacity = capacity
        self.size = size
        self.calls: list[str] = []
        self.gates: dict[str, asyncio.Future[None]] = {}

    async def start(self) -> None:
        return None

    async def decide(self, login: Login, timeout: float | None = None) -> Decision:
        gate = asyncio.get_running_loop().create_future()
        self.calls.append(login.user)
        self.gates[login.user] = gate
        await gate
        return Decision(Verdict.FAIL, Reason.BAD_PASSWORD, login.user)

    def open(self, user: str) -> None:
        self.gates[user].set_result(None)

    async def reload(self, cfg: Config) -> None:
        return None

    async def close(self) -> None:
        return None

    def describe(self) -> str:
        return "gates"

    def metric_values(self) -> list[tuple[str, str, float]]:
        return []


@pytest.fixture
def cfg(sqlite_store: SqlStore, sqlite_url: str, fast_hasher: PasswordHasher) -> Iterator[Config]:
    sqlite_store.add_user(
        "alice", fast_hasher.hash("pw"), networks=[NetworkRule.parse(HOME, scope="user")]
    )
    sqlite_store.add_global_network(NetworkRule.parse(OFFICE, scope="global"))
    c = Config(database_url=sqlite_url)
    c.report.record = False
    c.serve.failure_delay = 2.0
    yield c


async def until(cond: Callable[[], bool], what: str) -> None:
    for _ in range(1000):  # generous: only a hung scheduler ends here
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


class Harness:
    def __init__(self, cfg: Config, capacity: int, size: int = 1) -> None:
        self.inner = GateDecider(capacity, size)
        self.sched = Scheduler(self.inner, cfg, Classifier(cfg))
        self.tasks: dict[str, asyncio.Task[Decision]] = {}

    def submit(self, name: str, rip: str, user: str | None = None) -> None:
        coro = self.sched.decide(Login.of(user or name, b"guess", rip, "smtp"))
        self.tasks[name] = asyncio.ensure_future(coro)

    async def classified(self, n: int) -> None:
        await until(lambda: self.sched.counts.classified >= n, f"{n} classified")
        for _ in range(5):
            await asyncio.sleep(0)


def test_hopeless_slots() -> None:
    assert hopeless_slots(0.5, 4) == 2
    assert hopeless_slots(0.1, 4) == 1  # at least one, so alerts keep working
    assert hopeless_slots(0.0, 4) == 0
    assert hopeless_slots(1.0, 4) == 4


def test_could_succeed_overtakes_queued_hopeless(cfg: Config) -> None:
    async def main() -> None:
        h = Harness(cfg, capacity=2)  # one worker, two slots: one for hopeless logins
        await h.sched.start()
        h.submit("out1", OUTSIDE)  # nothing waits: straight to the worker, in the slice
        await until(lambda: h.inner.calls == ["out1"], "out1 verified")
        h.submit("in0", "192.0.2.1")
        await until(lambda: h.inner.calls == ["out1", "in0"], "in0 verified")
        for i in range(2, 5):
            h.submit(f"out{i}", OUTSIDE)
        await h.classified(4)
        h.submit("in1", "192.0.2.1")
        await h.classified(5)
        assert h.inner.calls == ["out1", "in0"]  # full: in1 waits with out2..out4
        h.inner.open("out1")
        await until(lambda: len(h.inner.calls) == 3, "a third verification")
        assert h.inner.calls[2] == "in1"  # not out2, which came first
        h.inner.open("in0")
        await until(lambda: len(h.inner.calls) == 4, "a fourth verification")
        assert h.inner.calls[3] == "out2"
        h.inner.open("in1")
        for k, name in enumerate(("out2", "out3", "out4")):
            h.inner.open(name)
            if name != "out4":
                await until(lambda k=k: len(h.inner.calls) == 5 + k, "next hopeless")  # type: ignore[misc]
        results = await asyncio.gather(*h.tasks.values())
        assert all(d.verdict is Verdict.FAIL for d in results)
        n = h.sched.counts
        assert (n.direct, n.hopeless, n.hopeless_verified, n.hopeless_unverified) == (1, 3, 3, 0)
        await h.sched.close()

    asyncio.run(main())


def test_hopeless_logins_hold_a_bounded_slice(cfg: Config) -> None:
    async def main() -> None:
        h = Harness(cfg, capacity=4, size=4)  # four threads
        await h.sched.start()
        assert h.sched.hopeless_cap == 2
        for i in range(6):
            h.submit(f"out{i}", f"203.0.113.{i}")
        await h.classified(4)  # out0 and out1 went straight to workers
        assert h.inner.calls == ["out0", "out1"]  # two workers of four, the rest stay free
        h.submit("in0", "192.0.2.1")
        h.submit("in1", "192.0.2.2")
        await until(lambda: len(h.inner.calls) == 4, "inside logins verified at once")
        assert h.inner.calls[2:] == ["in0", "in1"]
        h.inner.open("out0")
        await until(lambda: len(h.inner.calls) == 5, "next hopeless")
        assert h.inner.calls[4] == "out2"
        assert h.sched.hopeless_in_flight == 2
        await h.sched.close()

    asyncio.run(main())


def test_share_zero_refuses_every_hopeless_login_without_a_hash(cfg: Config) -> None:
    cfg.serve.hopeless_share = 0.0

    async def main() -> None:
        h = Harness(cfg, capacity=4)
        await h.sched.start()
        h.submit("existing", OUTSIDE, user="alice")
        h.submit("unknown", OUTSIDE, user="nobody")
        h.submit("invalid", OUTSIDE, user="bad\tname")
        h.submit("wrong-service-net", "198.51.100.7", user="nobody")  # alice's net, not global
        h.submit("alice-home", "198.51.100.7", user="alice")
        await until(lambda: h.inner.calls == ["alice"], "alice from home verified")
        h.inner.open("alice")
        d = {k: await t for k, t in h.tasks.items()}
        assert all(x.verdict is Verdict.FAIL for x in d.values())
        assert d["existing"].reason is Reason.NETWORK
        assert d["unknown"].reason is Reason.UNKNOWN_USER
        assert d["invalid"].reason is Reason.UNKNOWN_USER
        assert d["wrong-service-net"].reason is Reason.UNKNOWN_USER
        assert h.sched.counts.hopeless == 4 == h.sched.counts.hopeless_unverified
        assert h.sched.counts.hopeless_verified == 0
        await h.sched.close()

    asyncio.run(main())


def test_unknown_and_existing_names_take_the_same_path_from_outside(cfg: Config) -> None:
    """From outside, the scheduler's choice (verify or refuse) follows the load only."""

    async def run(user: str) -> tuple[list[str], int, int]:
        h = Harness(cfg, capacity=2)
        await h.sched.start()
        h.submit("filler", OUTSIDE)  # takes the one hopeless slot
        await until(lambda: h.inner.calls == ["filler"], "filler verified")
        for i in range(3):
            h.submit(f"x{i}", OUTSIDE, user=user)
        await h.classified(3)
        path = list(h.inner.calls)
        h.inner.open("filler")
        await until(lambda: len(h.inner.calls) == 2, "next")
        path += h.inner.calls[1:]
        for t in h.tasks.values():
            t.cancel()
        n = h.sched.counts
        await h.sched.close()
        return [p if p == "filler" else "x" for p in path], n.hopeless, n.hopeless_unverified

    async def main() -> None:
        assert await run("alice") == await run("nobody")

    asyncio.run(main())


def test_hopeless_logins_over_what_fits_by_the_deadline_are_refused_at_once(cfg: Config) -> None:
    cfg.serve.failure_delay = 0.0  # room for two estimated verifications per slot

    async def main() -> None:
        h = Harness(cfg, capacity=2)
        await h.sched.start()
        for i in range(10):
            h.submit(f"out{i}", OUTSIDE)
        await until(lambda: sum(t.done() for t in h.tasks.values()) >= 7, "refusals")
        assert h.inner.calls == ["out0"]
        refused = [t.result() for t in h.tasks.values() if t.done()]
        assert all(d.verdict is Verdict.FAIL and d.reason is Reason.UNKNOWN_USER for d in refused)
        assert h.sched.counts.hopeless_unverified == 7
        # those that waited are refused when they can no longer be verified in time
        await until(lambda: h.sched.counts.hopeless_unverified == 9, "late refusals")
        h.inner.open("out0")
        await h.tasks["out0"]
        await h.sched.close()

    asyncio.run(main())


def test_fair_share_between_client_addresses_and_owners(cfg: Config) -> None:
    async def main() -> None:
        h = Harness(cfg, capacity=1)
        await h.sched.start()
        h.submit("busy0", "192.0.2.66")
        await until(lambda: h.inner.calls == ["busy0"], "first")
        for i in range(1, 6):
            h.submit(f"busy{i}", "192.0.2.66")  # one busy machine in the office
        await h.classified(5)
        h.submit("colleague", "192.0.2.67")
        h.submit("home", "198.51.100.5", user="alice")  # another network
        await h.classified(7)
        for _ in range(4):
            h.inner.open(h.inner.calls[-1])
            n = len(h.inner.calls)
            await until(lambda n=n: len(h.inner.calls) == n + 1, "next")  # type: ignore[misc]
        # the busy machine's guesses (five names) get one turn per round, like the
        # colleague's and alice's: fair in client addresses as well as in owners
        assert h.inner.calls[:5] == ["busy0", "busy1", "colleague", "alice", "busy2"]
        for t in h.tasks.values():
            t.cancel()
        await h.sched.close()

    asyncio.run(main())


def test_fair_queue_round_robin() -> None:
    from saslnetauth.serve.decide.scheduler import _Ticket

    async def main() -> None:
        loop = asyncio.get_running_loop()
        q: FairQueue[_Ticket] = FairQueue(lambda t: t.waiter.done())
        tickets = {}
        for name, group, key in [
            ("a1", "g1", 1),
            ("a2", "g1", 1),
            ("b1", "g1", 2),
            ("c1", "g2", 3),
        ]:
            tickets[name] = _Ticket(False, 0.0, loop.create_future())
            q.push(group, key, tickets[name])
        tickets["a2"].waiter.set_result(False)  # expired while waiting: skipped
        order = []
        while (t := q.pop()) is not None:
            order.append(next(k for k, v in tickets.items() if v is t))
        assert order == ["a1", "c1", "b1"] and len(q) == 0

    asyncio.run(main())


def test_a_refusal_never_comes_from_a_cached_lookup(cfg: Config, sqlite_store: SqlStore) -> None:
    """A network added for alice is in force at once for the refusal decision: only
    "could succeed" results are taken from the classifier's short-lived cache."""

    async def main() -> None:
        classifier = Classifier(cfg)
        await classifier.start()
        first = await classifier.triage(Login.of("alice", b"", OUTSIDE, "smtp"))
        assert not first.could_succeed and first.user is not None
        assert (
            classifier.cached(Login.of("alice", b"", OUTSIDE, "smtp")) is None
        )  # never a cached refusal
        home = classifier.cached(Login.of("alice", b"", "198.51.100.9", "smtp"))
        assert home is not None and home.could_succeed  # same lookup, her own network
        sqlite_store.add_user_network("alice", NetworkRule.parse(OUTSIDE, scope="user"))
        again = await classifier.triage(Login.of("alice", b"", OUTSIDE, "smtp"))
        assert again.could_succeed
        await classifier.close()

    asyncio.run(main())


def test_classification_of_names_from_outside(cfg: Config) -> None:
    """Existing, unknown and invalid names: the same class from outside; unknown names
    are judged by the global networks only."""
    from saslnetauth.policy.classification import refusal

    async def main() -> list[Classified]:
        classifier = Classifier(cfg)
        await classifier.start()
        got = [
            await classifier.triage(Login.of(name, b"", rip, "smtp"))
            for name, rip in [
                ("alice", OUTSIDE),
                ("nobody", OUTSIDE),
                ("bad\tname", OUTSIDE),
                ("nobody", "198.51.100.9"),  # alice's network, not a global one
                ("nobody", "192.0.2.9"),  # a global network
                ("alice", "198.51.100.9"),
            ]
        ]
        await classifier.close()
        return got

    got = asyncio.run(main())
    assert [c.could_succeed for c in got] == [False, False, False, False, True, True]
    alice, nobody, invalid = got[:3]
    assert refusal(alice).reason is Reason.NETWORK
    assert refusal(nobody).reason is Reason.UNKNOWN_USER
    assert refusal(invalid).reason is Reason.UNKNOWN_USER and not invalid.valid_name
    assert refusal(alice).verdict is refusal(nobody).verdict is Verdict.FAIL
    with pytest.raises(ValueError, match="cannot succeed"):
        refusal(got[-1])


def test_a_login_given_up_while_queued_leaks_no_slot(cfg: Config) -> None:
    """The server stops waiting for a login at its request_timeout (its task is
    cancelled while the ticket still waits in the queue). That ticket must never take
    a slot later, nor break the queue: the next login is still admitted."""

    async def main() -> None:
        h = Harness(cfg, capacity=1)
        await h.sched.start()
        h.submit("busy", "192.0.2.1")  # takes the only slot
        await until(lambda: h.inner.calls == ["busy"], "busy verified")
        h.submit("gone", "192.0.2.2")  # could succeed: waits in the queue
        await h.classified(1)
        await until(lambda: h.sched.waiting == 1, "gone queued")
        h.tasks["gone"].cancel()  # what the server's wait_for does at request_timeout
        await asyncio.sleep(0)
        h.inner.open("busy")  # the slot comes free: "gone" must not take it
        await h.tasks["busy"]
        h.submit("next", "192.0.2.3")
        await until(lambda: h.inner.calls == ["busy", "next"], "next verified")
        assert h.sched.in_flight == 1
        h.inner.open("next")
        assert (await h.tasks["next"]).verdict is Verdict.FAIL
        assert h.sched.in_flight == 0
        await h.sched.close()

    asyncio.run(main())


def test_proxied_logins_are_classified_by_the_address_judged(cfg: Config) -> None:
    """Trusted proxies (docs/webmail.md): a forwarded login is classified by the client
    address it forwarded (from outside: hopeless, refused without a hash), one from the
    proxy alone always reaches the engine (only it knows the webmail sessions), and a
    forwarded address from a connection that is no proxy counts for nothing."""
    cfg.serve.hopeless_share = 0.0
    cfg.proxies.networks = ["127.0.0.1/32"]

    async def main() -> None:
        h = Harness(cfg, capacity=4)
        await h.sched.start()

        def login(name: str, rip: str, real_rip: str | None) -> None:
            coro = h.sched.decide(Login.of(name, b"guess", rip, "smtp", real_rip=real_rip))
            h.tasks[name] = asyncio.ensure_future(coro)

        login("forwarded-outside", OUTSIDE, "127.0.0.1")
        login("untrusted-forward", "192.0.2.9", "203.0.113.50")  # office address forwarded
        login("webmail-smtp", "127.0.0.1", None)
        login("forwarded-office", "192.0.2.9", "127.0.0.1")
        await until(
            lambda: sorted(h.inner.calls) == ["forwarded-office", "webmail-smtp"], "verified"
        )
        h.inner.open("forwarded-office")
        h.inner.open("webmail-smtp")
        d = {k: await t for k, t in h.tasks.items()}
        assert d["forwarded-outside"].reason is Reason.UNKNOWN_USER  # refused unverified
        assert d["untrusted-forward"].reason is Reason.UNKNOWN_USER
        assert h.sched.counts.hopeless_unverified == 2
        await h.sched.close()

    asyncio.run(main())
