"""The login map's candidates and the suspension screen (saslnetauth.sending.linked),
and one decision on the embedded state: every candidate counted, the tightest decides."""

from __future__ import annotations

import asyncio

from saslnetauth.sending.linked import (
    MAIN,
    CredentialPlan,
    LinkedTake,
    candidates,
    link_value,
    screen,
    take_linked,
)
from saslnetauth.sending.state import HOUR, Counter, EmbeddedState

T0 = 1_800_000_000.0


def _take(plans: dict[str, CredentialPlan], since: float = T0 - 3600) -> LinkedTake:
    return LinkedTake("k", since, "c:", ":rcpt:", plans, (), 1, T0)


def test_candidates_drop_old_logins_and_default_to_the_main_password() -> None:
    fields = {
        "app:phone": link_value("outside", T0 - 10),
        MAIN: link_value("own", T0 - 5000),  # older than the window
        "app:bad": "garbage",
    }
    assert candidates(fields, T0 - 3600) == [("app:phone", "outside", T0 - 10)]
    assert candidates({}, T0) == [(MAIN, "own", 0.0)]


def test_a_suspended_candidate_stops_unless_a_working_one_logged_in_after() -> None:
    plans = {
        MAIN: CredentialPlan((5, 50), (1, 12), suspended_at=T0 - 100),
        "app:phone": CredentialPlan((2, 20), (1, 5)),
    }
    before = [(MAIN, "own", T0 - 200), ("app:phone", "own", T0 - 150)]
    assert screen(before, _take(plans)) == (MAIN, [("app:phone", "own")])
    after = [(MAIN, "own", T0 - 200), ("app:phone", "own", T0 - 50)]
    assert screen(after, _take(plans)) == (None, [("app:phone", "own")])


def test_every_candidate_counts_and_the_tightest_limit_decides() -> None:
    async def go() -> list[object]:
        st = EmbeddedState(clock=lambda: T0)
        await st.note_login("k", MAIN, link_value("own", T0 - 1), 3600)
        await st.note_login("k", "app:phone", link_value("outside", T0 - 1), 3600)
        plans = {
            MAIN: CredentialPlan((5, 50), (2, 12)),
            "app:phone": CredentialPlan((8, 80), (2, 5)),
        }
        out: list[object] = []
        for _ in range(3):
            t = await take_linked(st, _take(plans))
            out.append((t.ok, t.over, t.over_credential if not t.ok else None))
        out.append(await st.peek([Counter("c:main:rcpt:hour", HOUR)], T0))
        return out

    got = asyncio.run(go())
    # phone from outside: 2 per hour; main own: 5; both counted; the phone's hour hit
    assert got[:2] == [(True, -1, None), (True, -1, None)]
    assert got[2] == (False, 0, ("app:phone", "outside"))  # candidates by name
    assert got[3] == (2,)  # the main password's counter moved too
