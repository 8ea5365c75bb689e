"""The sliding windows of the embedded state (saslnetauth.sending.state), the limits'
resolution (saslnetauth.sending.limits) and [sending]/[state] validation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from saslnetauth.config import load_config
from saslnetauth.errors import ConfigError
from saslnetauth.sending.limits import effective_limits
from saslnetauth.sending.logins import LoginLink
from saslnetauth.sending.state import DAY, HOUR, Counter, EmbeddedState
from saslnetauth.settings import SendingConfig
from saslnetauth.store.sending import CredentialLimits, SendingRow

T0 = 1_800_000_000.0


def test_take_is_all_or_nothing_and_slides() -> None:
    async def go() -> list[object]:
        st = EmbeddedState()
        hour, day = Counter("h", HOUR, 3), Counter("d", DAY, 4)
        out: list[object] = []
        for i in range(3):
            out.append((await st.take([hour, day], 1, T0 + i)).ok)
        refused = await st.take([hour, day], 1, T0 + 10)
        out.append((refused.ok, refused.over, refused.counts))
        # an hour later the hour's buckets are gone, the day's are not
        later = await st.take([hour, day], 1, T0 + 3600 + 60)
        out.append((later.ok, later.counts))
        out.append((await st.take([hour, day], 1, T0 + 3600 + 61)).over)
        out.append(await st.peek([hour, day], T0 + 2 * 86400))
        return out

    assert asyncio.run(go()) == [True, True, True, (False, 0, (3, 3)), (True, (0, 3)), 1, (0, 0)]


def test_keys_are_bounded_and_links_expire() -> None:
    now = [T0]
    st = EmbeddedState(max_keys=10, clock=lambda: now[0])

    async def go() -> tuple[int, str | None, str | None]:
        for i in range(50):
            await st.take([Counter(f"k{i}", HOUR, 0)], 1, T0)
            await st.put_link(f"l{i}", "x", 60)
        kept = len(st)
        fresh = await st.get_link("l49")
        now[0] += 61
        return kept, fresh, await st.get_link("l49")

    assert asyncio.run(go()) == (20, "x", None)  # 10 counters, 10 links


def _row(main: dict[str, int | None], app: dict[str, int | None], *, suspended: bool) -> SendingRow:
    when = datetime.now(UTC) if suspended else None
    return SendingRow("alice", CredentialLimits(main, when), {"phone": CredentialLimits(app)})


def test_limits_resolve_own_then_users_then_default_and_the_factor() -> None:
    cfg = SendingConfig(messages_per_hour=100, recipients_per_hour=40, outside_factor=0.25)
    row = _row({"messages_per_hour": 8}, {"recipients_per_hour": 2}, suspended=True)
    main, main_suspended = effective_limits(cfg, row, LoginLink(None))
    assert main["messages_per_hour"] == 8 and main["recipients_per_hour"] == 40
    assert main_suspended
    app, app_suspended = effective_limits(cfg, row, LoginLink("phone", "outside"))
    assert app["messages_per_hour"] == 2  # the user's 8, from outside
    assert app["recipients_per_hour"] == 1  # its own 2 * 0.25, at least 1
    assert not app_suspended
    unknown, _ = effective_limits(cfg, None, LoginLink(None, "outside"))
    assert unknown["messages_per_hour"] == 25


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sending]\nlisten = 'inet:0.0.0.0:10040'", "loopback"),
        ("[sending]\nlisten = 'inet:192.0.2.1:10040'", "loopback"),
        ("[sending]\nlisten = 'nowhere'", "sending.listen"),
        ("[sending]\noutside_factor = 0", "outside_factor"),
        ("[sending]\nmessages_per_hour = -1", "messages_per_hour"),
        ("[sending]\nsuspend_window = 10", "suspend_window"),
        ("[state]\nurl = 'memcached://x'", "state.url"),
        ("[state]\nprefix = 'a b'", "state.prefix"),
    ],
)
def test_bad_sending_config(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(p)


def test_good_sending_config(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text("[sending]\nlisten = 'inet:127.0.0.1:10040'\n[state]\nurl = 'redis://x:1/0'\n")
    assert load_config(p).sending.listen == "inet:127.0.0.1:10040"
