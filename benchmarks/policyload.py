"""A load generator for Postfix SMTP access policy servers (``check_policy_service``).

Each client is one long-lived connection, like one Postfix smtpd process's:
for every message it sends one ``protocol_state=RCPT`` request per recipient,
then one ``protocol_state=END-OF-MESSAGE`` request (the attributes Postfix 3.7
sends for an authenticated session, per Postfix's SMTPD_POLICY_README), and waits for each
``action=...`` answer before the next request. A connection the server closes
(postfwd's children exit after 1,000 requests) is reopened and the request
sent again, as smtpd does; the reconnection is part of that decision's latency.

Modes: closed loop (N clients, as fast as the server answers, for a duration)
and paced (a fixed rate of decisions, latency counted from the scheduled
time, so a stalled server cannot hide its queue). Used by ``sending.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks.common import percentile

#: an answer that lets the mail through (anything else is a deferral or a rejection)
PASS_ACTIONS = ("dunno", "ok")
TIMEOUT = 10.0
_instances = itertools.count(1)


def policy_request(
    state: str,
    user: str,
    *,
    instance: str,
    client: str = "192.0.2.10",
    recipient: str = "rcpt@example.net",
    recipient_count: int = 0,
    size: int = 0,
    queue_id: str = "",
) -> bytes:
    """One request as Postfix's smtpd writes it (name=value lines, then an empty line)."""
    attrs = {
        "request": "smtpd_access_policy",
        "protocol_state": state,
        "protocol_name": "ESMTP",
        "helo_name": "client.example.net",
        "queue_id": queue_id,
        "sender": f"{user}@example.org",
        "recipient": recipient if state == "RCPT" else "",
        "recipient_count": str(recipient_count),
        "client_address": client,
        "client_name": "unknown",
        "client_port": "40000",
        "reverse_client_name": "unknown",
        "server_address": "127.0.0.1",
        "server_port": "587",
        "instance": instance,
        "sasl_method": "PLAIN",
        "sasl_username": user,
        "sasl_sender": "",
        "size": str(size),
        "ccert_subject": "",
        "ccert_issuer": "",
        "ccert_fingerprint": "",
        "ccert_pubkey_fingerprint": "",
        "encryption_protocol": "TLSv1.3",
        "encryption_cipher": "TLS_AES_256_GCM_SHA384",
        "encryption_keysize": "256",
        "etrn_domain": "",
        "stress": "",
        "policy_context": "",
    }
    return "".join(f"{k}={v}\n" for k, v in attrs.items()).encode() + b"\n"


def message(user: str, recipients: int = 1, size: int = 2048) -> list[bytes]:
    """The requests of one message: RCPT per recipient, then END-OF-MESSAGE."""
    inst = f"{next(_instances):x}.6748a1b2.{user}"
    out = [
        policy_request(
            "RCPT",
            user,
            instance=inst,
            recipient=f"r{i}@example.net",
            queue_id="" if i == 0 else "4ABCDE12F3",
        )
        for i in range(recipients)
    ]
    out.append(
        policy_request(
            "END-OF-MESSAGE",
            user,
            instance=inst,
            recipient_count=recipients,
            size=size,
            queue_id="4ABCDE12F3",
        )
    )
    return out


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    actions: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    reconnects: int = 0
    messages_passed: int = 0
    elapsed: float = 0.0

    def note(self, action: str, latency: float) -> None:
        self.latencies.append(latency)
        word = action.split(" ", 1)[0].lower()
        self.actions[word] = self.actions.get(word, 0) + 1

    def summary(self) -> dict[str, float]:
        lat = sorted(self.latencies)
        return {
            "decisions": len(lat),
            "per_second": len(lat) / self.elapsed if self.elapsed else 0.0,
            "p50": percentile(lat, 50),
            "p99": percentile(lat, 99),
            "max": lat[-1] if lat else float("nan"),
        }

    def passed(self) -> int:
        return sum(n for word, n in self.actions.items() if word in PASS_ACTIONS)


class PolicyConnection:
    """One smtpd process's connection to the policy server."""

    def __init__(self, host: str, port: int, stats: Stats) -> None:
        self.host, self.port, self.stats = host, port, stats
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self, tries: int = 50) -> None:
        for attempt in range(tries):
            try:
                self.reader, self.writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), TIMEOUT
                )
                return
            except (OSError, TimeoutError):
                if attempt == tries - 1:
                    raise
                await asyncio.sleep(0.05)

    async def ask(self, data: bytes, timeout: float = TIMEOUT) -> str:
        """The action for one request; reopens once if the server had closed."""
        for attempt in range(2):
            if self.writer is None:
                self.stats.reconnects += 1
                await self.open()
            assert self.reader is not None and self.writer is not None
            try:
                self.writer.write(data)
                await self.writer.drain()
                raw = await asyncio.wait_for(self.reader.readuntil(b"\n\n"), timeout)
                return raw.decode(errors="replace").strip().removeprefix("action=")
            except (OSError, asyncio.IncompleteReadError):
                self.close()
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    async def send_message(self, requests: Sequence[bytes], t0: float | None = None) -> bool:
        """All requests of one message; True if every answer let it through."""
        ok = True
        for data in requests:
            start = time.perf_counter() if t0 is None else t0
            try:
                action = await self.ask(data)
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                self.stats.errors += 1
                self.close()
                return False
            self.stats.note(action, time.perf_counter() - start)
            t0 = None
            if action.split(" ", 1)[0].lower() not in PASS_ACTIONS:
                ok = False
        if ok:
            self.stats.messages_passed += 1
        return ok

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _open_warm(conn: PolicyConnection) -> None:
    """Open ``conn`` and get one answer on it before the clock starts (forked servers
    spawn their children now). A connection that gets no answer is opened again: a
    full listen backlog (policyd-rate-limit's is 5) can leave a client "connected"
    that the server never accepts."""
    warm = policy_request("VRFY", "warmup", instance="0")
    for attempt in range(6):
        await conn.open()
        try:
            await conn.ask(warm, 20)
            return
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            conn.close()
            if attempt == 5:
                raise


async def _open_all(host: str, port: int, n: int, stats: Stats) -> list[PolicyConnection]:
    conns = [PolicyConnection(host, port, stats) for _ in range(n)]
    for group in range(0, n, 5):
        await asyncio.gather(*(_open_warm(c) for c in conns[group : group + 5]))
    return conns


async def closed_loop(
    host: str, port: int, clients: int, seconds: float, users: Sequence[str]
) -> Stats:
    """``clients`` connections sending messages back to back for ``seconds``."""
    stats = Stats()
    conns = await _open_all(host, port, clients, stats)
    stop = time.perf_counter() + seconds

    async def run(i: int, conn: PolicyConnection) -> None:
        for k in itertools.count():
            if time.perf_counter() >= stop:
                return
            await conn.send_message(message(users[(i + k * clients) % len(users)]))

    start = time.perf_counter()
    await asyncio.gather(*(run(i, c) for i, c in enumerate(conns)))
    stats.elapsed = time.perf_counter() - start
    for c in conns:
        c.close()
    return stats


async def paced(
    host: str, port: int, rate: float, seconds: float, users: Sequence[str], clients: int = 50
) -> Stats:
    """``rate`` decisions per second (messages of one RCPT + END-OF-MESSAGE, so
    rate/2 messages per second) over ``clients`` connections."""
    stats = Stats()
    conns = await _open_all(host, port, clients, stats)
    idle: asyncio.Queue[PolicyConnection] = asyncio.Queue()
    for c in conns:
        idle.put_nowait(c)
    interval = 2.0 / rate
    total = int(seconds * rate / 2)
    tasks: list[asyncio.Task[None]] = []

    async def one(k: int, due: float) -> None:
        conn = await idle.get()
        try:
            await conn.send_message(message(users[k % len(users)]), t0=due)
        finally:
            idle.put_nowait(conn)

    start = time.perf_counter()
    for k in range(total):
        due = start + k * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(k, due)))
    # a server slower than the rate would take minutes to drain its queue: what is not
    # answered 5 s after the last scheduled message is abandoned and counted as an error
    _done, late = await asyncio.wait(tasks, timeout=5.0)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    stats.errors += len(late)
    stats.elapsed = time.perf_counter() - start
    for c in conns:
        c.close()
    return stats


async def race(host: str, port: int, clients: int, user: str, attempts: int) -> int:
    """``clients`` connections sending ``attempts`` messages in all for one user at
    once; returns how many messages every answer let through."""
    stats = Stats()
    conns = await _open_all(host, port, clients, stats)
    todo = iter(range(attempts))

    async def run(conn: PolicyConnection) -> None:
        for _ in todo:
            await conn.send_message(message(user))

    await asyncio.gather(*(run(c) for c in conns))
    for c in conns:
        c.close()
    return stats.messages_passed


async def race_split(targets: Sequence[tuple[str, int]], clients: int, user: str, n: int) -> int:
    """The race spread over several servers (e.g. two sharing one Redis)."""
    each = [clients // len(targets)] * len(targets)
    counts = await asyncio.gather(
        *(race(h, p, c, user, n // len(targets)) for (h, p), c in zip(targets, each, strict=True))
    )
    return sum(counts)
