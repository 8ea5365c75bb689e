"""Network-aware scheduling of the password hashes (docs/design.md, point 8).

A botnet guessing passwords from random addresses must not make a real
user's login wait behind hundreds of hashes. Every login is first
classified (:mod:`saslnetauth.serve.decide.classifier`: user lookup and network
match, no password); then the expensive verification is scheduled by
whether the login *could* succeed:

- **could succeed** (the address lies in the networks of the credential the
  login names: the main password's are the user's own and the global ones,
  an app password's its own and the global ones, an unknown name's the
  global ones): served first, fairly per *owner* (the name and the
  credential: main password or app password id; an unknown name is an
  owner of its own, like an existing user's main password) and per client
  bucket (IPv4 address, IPv6 /penalty_ipv6_prefix) at once
  (:mod:`saslnetauth.serve.decide.fairqueue`): the guesses for one user from many
  addresses, or from one machine for many names, get one turn per round
  like any other owner or address, so they delay another user's login by
  about one verification (the per-address brake of
  :mod:`saslnetauth.serve.decide.penalty` still applies before a login gets here);
- **cannot succeed**: verified anyway while there is room, so that a
  correct password from a forbidden network is still logged and alerted,
  but these logins hold at most ``[serve] hopeless_share`` of the workers
  (so the others stay free for real users) and only when no login that could
  succeed is waiting. One that
  could not start early enough to be decided by its failure deadline is
  answered FAIL without a hash (logged ``verified=no``, counted in the
  metrics), through the same reply path as every FAIL.

While nothing waits and the slice has room, a login goes straight to a
worker without being classified (counted in the slice, since it might be
one that cannot succeed): a server that is not busy works as if there were
no scheduler. So does one whose verifications are cheap: while the logins
in flight would keep a new one waiting less than :data:`QUIET_WAIT` (their
number times the running estimate of a verification, over the workers),
it too goes straight to the workers' queue, unclassified (classifying costs
a user lookup on the server's own thread, which with PLAIN or fast hashes
costs more than the verification it would order). Expensive hashes, where
order matters, push the estimate up and bring classification back within
a few logins; a slice of 0 (``hopeless_share = 0``: never verify a login that
cannot succeed) always classifies.

Nothing here depends on the secret (only a token's public identifier names
the credential), and from outside a user's own networks that user's name
classifies, and queues, like an unknown one, so the reply and its timing
class reveal neither.

The scheduler is a :class:`~saslnetauth.serve.decide.decider.Decider` in front of
the real one and never hands it more than its ``capacity`` at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from saslnetauth.logfmt import kv
from saslnetauth.policy.classification import Classified
from saslnetauth.policy.verdict import Decision, Reason, Verdict
from saslnetauth.serve.decide.fairqueue import FairQueue
from saslnetauth.serve.decide.penalty import client_bucket

if TYPE_CHECKING:
    from saslnetauth.config import Config
    from saslnetauth.serve.decide.classifier import Classifier
    from saslnetauth.serve.decide.decider import Decider, Login

__all__ = ["Scheduler", "hopeless_slots"]

log = logging.getLogger("saslnetauth.serve.scheduler")

#: Seconds between checks for waiting logins past their time.
SWEEP_INTERVAL = 0.05
#: Weight of the newest verification time in the running estimate.
EWMA = 0.1
#: Seconds a verification is assumed to take before one was measured.
INITIAL_ESTIMATE = 0.1
#: Seconds of expected wait behind the logins in flight below which a new login
#: skips classification even when the workers are busy (see the module doc).
QUIET_WAIT = 0.02


def _loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def hopeless_slots(share: float, workers: int) -> int:
    """Verifications of logins that cannot succeed allowed at once: ``share`` of the
    workers (each works on one login at a time), at least one unless the share is 0."""
    if share <= 0:
        return 0
    return max(1, min(workers, math.floor(share * workers)))


@dataclass(eq=False)
class _Ticket:
    hopeless: bool
    #: Loop time after which a waiting ticket is refused.
    expires: float
    waiter: asyncio.Future[bool]
    admitted_at: float = 0.0


@dataclass
class _Counts:
    direct: int = 0
    classified: int = 0
    hopeless: int = 0
    hopeless_verified: int = 0
    hopeless_unverified: int = 0
    timed_out: int = 0


class Scheduler:
    """Classifies each login, then admits it to ``inner`` by priority (see module doc)."""

    def __init__(self, inner: Decider, cfg: Config, classifier: Classifier) -> None:
        self.inner = inner
        self.cfg = cfg
        self.classifier = classifier
        self.capacity = max(1, inner.capacity)
        self.in_flight = 0
        self.classifying = 0
        self.hopeless_in_flight = 0
        self.estimate = INITIAL_ESTIMATE
        self.counts = _Counts()
        self._could: FairQueue[_Ticket] = FairQueue(lambda t: t.waiter.done())
        self._could_expiry: deque[_Ticket] = deque()  # arrival order
        self._hopeless: deque[_Ticket] = deque()  # arrival order
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def size(self) -> int:
        return self.inner.size

    @property
    def hopeless_cap(self) -> int:
        return hopeless_slots(self.cfg.serve.hopeless_share, self.size)

    # -- Decider -----------------------------------------------------------------

    async def start(self) -> None:
        await self.inner.start()
        self.capacity = max(1, self.inner.capacity)
        await self.classifier.start()

    async def reload(self, cfg: Config) -> None:
        await self.inner.reload(cfg)
        await self.classifier.reload(cfg)
        self.cfg = cfg
        self.capacity = max(1, self.inner.capacity)
        self._pump()

    async def close(self) -> None:
        await self.inner.close()
        await self.classifier.close()

    def describe(self) -> str:
        return f"{self.inner.describe()}, hopeless_share={self.cfg.serve.hopeless_share:g}"

    @property
    def waiting(self) -> int:
        return len(self._could) + len(self._hopeless)

    async def decide(
        self, login: Login, timeout: float | None = None, classified: Classified | None = None
    ) -> Decision:
        """``classified``: its classification, made already (serve.decide.inline; used
        when the login is classified at all)."""
        loop = asyncio.get_running_loop()
        arrival = loop.time()
        serve = self.cfg.serve
        deadline = arrival + (serve.request_timeout if timeout is None else timeout)
        if self._quiet():
            # Nothing waits and the bounded slice has room: straight to a worker without
            # classifying (the path of a server that is not busy), counted in the slice.
            ticket = _Ticket(True, 0.0, loop.create_future())
            self._take(ticket)
            self.counts.direct += 1
        else:
            judged = self._judged(login)  # proxies hook: classified by the address judged
            c = classified or await self._triaged(judged, deadline)
            ready = self._classified(c, judged, arrival, deadline)
            if isinstance(ready, Decision):
                return ready
            ticket = ready
            if not await ticket.waiter:
                return self._expired(ticket, c, judged)
        remaining = deadline - loop.time()
        try:
            if remaining <= 0:  # admitted too late: never sent to a worker
                return self._timed_out(login.user)
            return await self.inner.decide(login, timeout=remaining)
        finally:
            self._release(ticket)

    async def _triaged(self, login: Login, deadline: float) -> Classified:
        """The cheap step for ``login`` (it names its credential, never the secret)."""
        if login.real_rip is not None and login.rip is None:
            # a trusted proxy alone: only the engine knows its webmail session
            return Classified(login.user[:255], True)
        c = self.classifier.cached(login)
        if c is None:
            self.classifying += 1
            try:
                async with asyncio.timeout_at(deadline):
                    c = await self.classifier.triage(login)
            finally:
                self.classifying -= 1
        return c

    def _judged(self, login: Login) -> Login:
        """The login as judged (saslnetauth.policy.proxies): itself when no proxies are
        configured and nothing was forwarded, or without a classifier engine."""
        engine = self.classifier.engine
        if engine is None or (login.real_rip is None and not engine.proxies):
            return login
        return engine.proxies.judged(login)[1]

    def _quiet(self) -> bool:
        if self._could or self._hopeless or self.classifying:
            return False
        cap = self.hopeless_cap
        if self.in_flight < self.capacity and self.hopeless_in_flight < cap:
            return True
        # busy, but with cheap verifications: waiting behind them costs less than
        # classifying would
        return cap > 0 and self.in_flight * self.estimate < QUIET_WAIT * self.size

    def _classified(
        self, c: Classified, login: Login, arrival: float, deadline: float
    ) -> _Ticket | Decision:
        """A ticket in the login's lane, or the refusal of a login that cannot succeed."""
        self.counts.classified += 1
        serve = self.cfg.serve
        if not c.could_succeed and c.error is None:
            self.counts.hopeless += 1
            ticket = self._hopeless_ticket(arrival)
            if ticket is None:
                return self._refuse(c, login)
            if ticket.waiter.done():
                self.counts.hopeless_verified += 1
            else:
                ticket.waiter.add_done_callback(self._count_verified)
            return ticket
        ticket = _Ticket(False, deadline, _loop().create_future())
        if not self._admit_now(ticket):
            bucket = client_bucket(login.address, ipv6_prefix=serve.penalty_ipv6_prefix)
            self._could.push(c.owner, bucket, ticket)
            self._could_expiry.append(ticket)
            self._arm()
            self._pump()
        return ticket

    def _count_verified(self, waiter: asyncio.Future[bool]) -> None:
        if not waiter.cancelled() and waiter.result():
            self.counts.hopeless_verified += 1

    def _expired(self, t: _Ticket, c: Classified, login: Login) -> Decision:
        if t.hopeless:
            return self._refuse(c, login)
        return self._timed_out(c.name)

    def _timed_out(self, name: str) -> Decision:
        self.counts.timed_out += 1
        log.error("%s", kv("verification timed out", user=name, waiting="worker"))
        return Decision(
            Verdict.TEMPFAIL, Reason.BACKEND_ERROR, name, detail="verification timed out"
        )

    def metric_values(self) -> list[tuple[str, str, float]]:
        """(name, help, value) for the server's /metrics, the decider's own included."""
        n = self.counts
        return [
            *self.inner.metric_values(),
            (
                "saslnetauth_hopeless_total",
                "Logins that could not succeed (address outside every network that applies).",
                n.hopeless,
            ),
            (
                "saslnetauth_hopeless_verified_total",
                "Logins that could not succeed whose password was verified anyway.",
                n.hopeless_verified,
            ),
            (
                "saslnetauth_hopeless_unverified_total",
                "Logins that could not succeed answered FAIL without a hash (workers busy).",
                n.hopeless_unverified,
            ),
            (
                "saslnetauth_unclassified_total",
                "Logins sent straight to a decision worker (nothing was waiting).",
                n.direct,
            ),
            (
                "saslnetauth_waiting_logins",
                "Classified logins waiting for a decision worker.",
                self.waiting,
            ),
        ]

    # -- admission -----------------------------------------------------------------

    def _hopeless_ticket(self, arrival: float) -> _Ticket | None:
        """A ticket to wait for a slot, or None when the login is refused at once: no
        slot for it, or more waiting than the slots can verify by its deadline."""
        cap = self.hopeless_cap
        if cap == 0:
            return None
        h = self.estimate
        budget = max(self.cfg.serve.failure_delay - 2 * h, 2 * h)
        ticket = _Ticket(True, arrival + budget, _loop().create_future())
        if self._admit_now(ticket):
            return ticket
        if len(self._hopeless) >= cap * budget / h:
            return None
        self._hopeless.append(ticket)
        self._arm()
        self._pump()
        return ticket

    def _admit_now(self, t: _Ticket) -> bool:
        if self.in_flight >= self.capacity or self._could:
            return False
        if t.hopeless and (self._hopeless or self.hopeless_in_flight >= self.hopeless_cap):
            return False
        self._take(t)
        return True

    def _take(self, t: _Ticket) -> None:
        self.in_flight += 1
        if t.hopeless:
            self.hopeless_in_flight += 1
        t.admitted_at = asyncio.get_running_loop().time()
        if not t.waiter.done():
            t.waiter.set_result(True)

    def _release(self, t: _Ticket) -> None:
        self.in_flight -= 1
        if t.hopeless:
            self.hopeless_in_flight -= 1
        took = asyncio.get_running_loop().time() - t.admitted_at
        self.estimate += EWMA * (max(took, 1e-4) - self.estimate)
        self._pump()

    def _pump(self) -> None:
        """Admit waiting logins while there is room: could-succeed ones first."""
        now = asyncio.get_running_loop().time()
        while self.in_flight < self.capacity:
            t = self._could.pop()
            if t is not None and t.expires <= now:
                t.waiter.set_result(False)  # past its request_timeout: never sent
                continue
            if t is None:
                if self.hopeless_in_flight >= self.hopeless_cap:
                    return
                t = self._next_hopeless(now)
                if t is None:
                    return
            self._take(t)

    def _next_hopeless(self, now: float) -> _Ticket | None:
        while self._hopeless:
            t = self._hopeless.popleft()
            if t.waiter.done():
                continue
            if t.expires <= now:
                t.waiter.set_result(False)
                continue
            return t
        return None

    def _refuse(self, c: Classified, login: Login) -> Decision:
        self.counts.hopeless_unverified += 1
        return self.classifier.refuse(c, login)

    # -- expiry ---------------------------------------------------------------------

    def _arm(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL, self._sweep)

    def _sweep(self) -> None:
        """Refuse waiting logins past their time (oldest first: each lane is in
        arrival order, so only its head is looked at)."""
        self._sweeper = None
        now = asyncio.get_running_loop().time()
        for lane in (self._could_expiry, self._hopeless):
            while lane and (lane[0].waiter.done() or lane[0].expires <= now):
                t = lane.popleft()
                if not t.waiter.done():
                    t.waiter.set_result(False)
        if self._could_expiry or self._hopeless:
            self._arm()
