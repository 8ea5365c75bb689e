"""One sending decision as one step of the state store: find the session's
credentials from the login links, then check and add their counters.

The responder notes each allowed login in a map per (user, client address):
credential name -> ``origin|time`` (:func:`link_value`). A policy request does
not say which credential authenticated its session, and Postfix does not tell
the auth server the client's port (its ``AUTH`` line carries ``lip``/``rip``
only), so two credentials of one user behind one NAT address cannot be told
apart. Every credential that logged in from that address within the link's time
to live is therefore a candidate (:func:`candidates`), and the message counts
against **each** of them: the tightest limit decides, and a suspended candidate
stops it (fail closed). No candidate: the main password, admitted by the user's
own networks.

:class:`LinkedTake` is the whole request, :class:`LinkedTaken` the answer; the
embedded state runs it in this process, Redis as one server-side script
(:mod:`saslnetauth.sending.redisstate`): one round trip per decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from saslnetauth.policy.suspension import OUTSIDE, OWN
from saslnetauth.sending.state import DAY, HOUR, Counter, SendingState, Window

__all__ = [
    "MAIN",
    "WINDOWS",
    "CredentialPlan",
    "LinkedTake",
    "LinkedTaken",
    "candidates",
    "link_value",
    "screen",
    "take_linked",
]

MAIN = "main"
#: The windows of a credential's counters, in this order.
WINDOWS: tuple[Window, Window] = (HOUR, DAY)


@dataclass(frozen=True, slots=True)
class CredentialPlan:
    """A credential's limits per window for an ``own`` and an ``outside`` login
    (0: none), and when it was suspended (Unix time; 0: it is not)."""

    own: tuple[int, int]
    outside: tuple[int, int]
    suspended_at: float = 0.0

    def limits(self, origin: str) -> tuple[int, int]:
        return self.outside if origin == OUTSIDE else self.own


@dataclass(frozen=True, slots=True)
class LinkedTake:
    """Add ``amount`` to every candidate's counters and to ``shared`` unless one
    would pass its limit. A candidate's counter key is
    ``cbase + credential name + tail + window name``."""

    link_key: str
    since: float  # logins noted before this are ignored
    cbase: str
    tail: str
    plans: Mapping[str, CredentialPlan]  # by credential name; MAIN is always there
    shared: Sequence[Counter] = ()
    amount: int = 1
    now: float = 0.0

    def key(self, credential: str, window: Window) -> str:
        return f"{self.cbase}{credential}{self.tail}{window.name}"

    def limits_for(self, creds: Sequence[tuple[str, str]]) -> tuple[int, ...]:
        """The limit of each candidate counter, then 0 for each shared one."""
        out = [n for name, origin in creds for n in self.plan(name).limits(origin)]
        return (*out, *(c.limit for c in self.shared))

    def plan(self, credential: str) -> CredentialPlan:
        """A credential the database no longer knows: the user's limits."""
        found = self.plans.get(credential)
        if found is not None:
            return found
        main = self.plans[MAIN]
        return CredentialPlan(main.own, main.outside)


@dataclass(frozen=True, slots=True)
class LinkedTaken:
    """``ok``: added; ``suspended``: a candidate is suspended (nothing added);
    ``credentials``: the candidates as (name, origin); ``counts``: before, per
    candidate its windows in :data:`WINDOWS` order, then ``shared``; ``over``:
    the index in ``counts`` of the first counter that would have passed (-1)."""

    ok: bool
    credentials: tuple[tuple[str, str], ...]
    counts: tuple[int, ...]
    over: int = -1
    suspended: str | None = None
    limits: tuple[int, ...] = field(default=())

    @property
    def over_credential(self) -> tuple[str, str]:
        """The candidate whose limit was hit (the first candidate when none)."""
        i = self.over // len(WINDOWS) if 0 <= self.over < 2 * len(self.credentials) else 0
        return self.credentials[i]


def link_value(origin: str, when: float) -> str:
    return f"{OUTSIDE if origin != OWN else OWN}|{when:.3f}"


def candidates(fields: Mapping[str, str], since: float) -> list[tuple[str, str, float]]:
    """The credentials noted at or after ``since`` as (name, origin, login time), by
    name; none: the main password, own."""
    out = []
    for name, value in sorted(fields.items()):
        origin, _, when = value.partition("|")
        try:
            t = float(when)
        except ValueError:
            continue
        if t >= since:
            out.append((name, OWN if origin == OWN else OUTSIDE, t))
    return out or [(MAIN, OWN, 0.0)]


def screen(
    creds: Sequence[tuple[str, str, float]], req: LinkedTake
) -> tuple[str | None, list[tuple[str, str]]]:
    """(the suspended candidate that stops the message or None, the candidates counted).

    A suspended credential cannot log in again, but a session it opened before may
    still be sending: it stops the message, unless another candidate logged in
    from that address after the suspension (that working credential's limits then
    bound the address's mail; the suspended one is not counted)."""
    kept = [(n, o) for n, o, _ in creds if req.plan(n).suspended_at <= 0]
    for name, _, _ in creds:
        at = req.plan(name).suspended_at
        if at > 0 and not any(
            t > at and req.plan(n).suspended_at <= 0 for n, _, t in creds if n != name
        ):
            return name, kept
    return None, kept


async def take_linked(state: SendingState, req: LinkedTake) -> LinkedTaken:
    """Run ``req`` on ``state``: its own one-step operation when it has one (Redis: one
    script), else :meth:`~SendingState.login_fields` then :meth:`~SendingState.take`,
    which for the embedded state never yield to the event loop (atomic)."""
    own = getattr(state, "take_linked", None)
    if own is not None:
        taken: LinkedTaken = await own(req)
        return taken
    stop, kept = screen(candidates(await state.login_fields(req.link_key), req.since), req)
    creds = tuple(kept)
    if stop is not None:
        return LinkedTaken(False, creds, (), suspended=stop)
    limits = req.limits_for(creds)
    keys = [req.key(name, w) for name, _ in creds for w in WINDOWS]
    windows = WINDOWS * len(creds)
    counters = [Counter(k, w, n) for k, w, n in zip(keys, windows, limits, strict=False)]
    counters += req.shared
    done = await state.take(counters, req.amount, req.now)
    return LinkedTaken(done.ok, creds, done.counts, done.over, limits=limits)
