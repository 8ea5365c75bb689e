"""An asyncio load generator for the CLIENT side of Dovecot's auth protocol.

It behaves like a busy Postfix smtpd pool: ``connections`` long-lived
connections, each sending one ``AUTH ... PLAIN`` request at a time and
waiting for its ``OK``/``FAIL`` before sending the next (Postfix never
pipelines on one connection). It works against any auth-client socket:
``saslnetauth serve``, Dovecot's own ``auth-client``, or Dovecot with a
checkpassword passdb.

Handshake (docs/protocols.md section 1): read the server's lines up to
``DONE`` (checking ``VERSION 1`` and ``MECH PLAIN``), send ``VERSION 1 2``
and ``CPID``; then per request::

    AUTH <id> PLAIN service=smtp nologin lip=127.0.0.1 rip=<ip> resp=<b64(\\0user\\0pw)>

Every request has an expected verdict (OK or FAIL); a reply with another
verdict, a ``FAIL ... temp``, a reply for another id, a ``CONT``, a closed
connection or a timeout is counted as an error of that kind (and the
connection is replaced, as Postfix would). The run stops after a fixed
number of requests or after a duration (no new request is sent after the
deadline; those in flight are still awaited). All connections are opened
and greeted before the clock starts.

Only loopback targets are accepted (``unix:/path``, ``/path``,
``inet:127.x.y.z:PORT``, ``inet:[::1]:PORT``).

Command line (prints one summary table)::

    .venv/bin/python benchmarks/loadgen.py --target unix:/run/saslnetauth/auth-client \\
        --login alice,secret,127.0.0.2,ok --login alice,secret,203.0.113.9,fail \\
        --connections 20 --requests 5000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import itertools
import os
import random
import resource
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ms, percentile, raise_nofile, rate, table

__all__ = ["AuthConnection", "LoadResult", "LoadState", "Login", "parse_target", "run_load"]

ERROR_KINDS = ("verdict", "tempfail", "protocol", "timeout", "closed", "connect")


@dataclass(frozen=True, slots=True)
class Login:
    """One kind of request and the verdict it must get."""

    user: str
    password: str
    rip: str | None
    expect_ok: bool
    label: str = ""
    service: str = "smtp"

    def tail(self) -> bytes:
        """Everything of the AUTH line after the id (precomputed once per Login)."""
        resp = base64.b64encode(b"\0" + self.user.encode() + b"\0" + self.password.encode())
        rip = f"\trip={self.rip}" if self.rip is not None else ""
        return (
            f"\tPLAIN\tservice={self.service}\tnologin\tlip=127.0.0.1{rip}\tresp={resp.decode()}\n"
        ).encode()


def parse_target(target: str) -> tuple[str, str, int]:
    """``("unix", path, 0)`` or ``("inet", host, port)``; refuses non-loopback hosts."""
    if target.startswith("inet:"):
        rest = target[5:]
        if rest.startswith("["):
            host, _, port = rest[1:].partition("]:")
        else:
            host, _, port = rest.rpartition(":")
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"refusing non-loopback target {target}")
        return "inet", host, int(port)
    path = target[5:] if target.startswith("unix:") else target
    return "unix", path, 0


class _Protocol(asyncio.Protocol):
    """Splits lines; the greeting resolves one future, each reply the pending one."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.buf = bytearray()
        self.greeting: asyncio.Future[list[bytes]] = loop.create_future()
        self.greeting_lines: list[bytes] = []
        self.pending: asyncio.Future[bytes] | None = None
        self.stray: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            self._line(bytes(buf[start:nl]))
            start = nl + 1
        if start:
            del buf[:start]

    def _line(self, line: bytes) -> None:
        if not self.greeting.done():
            self.greeting_lines.append(line)
            if line == b"DONE":
                self.greeting.set_result(self.greeting_lines)
            return
        fut = self.pending
        if fut is not None and not fut.done():
            self.pending = None
            fut.set_result(line)
        else:
            self.stray.append(line)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        for fut in (self.greeting, self.pending):
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionError("connection closed by the server"))


class ProtocolViolation(Exception):
    pass


def _expire(fut: asyncio.Future[bytes]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class AuthConnection:
    """One client connection; :meth:`request` sends an AUTH and returns the reply line."""

    def __init__(self, proto: _Protocol) -> None:
        self.proto = proto
        self.ids = itertools.count(1)

    @classmethod
    async def open(cls, target: str, timeout: float = 30.0) -> AuthConnection:
        loop = asyncio.get_running_loop()
        kind, where, port = parse_target(target)
        proto = _Protocol(loop)
        if kind == "unix":
            await asyncio.wait_for(loop.create_unix_connection(lambda: proto, where), timeout)
        else:
            await asyncio.wait_for(loop.create_connection(lambda: proto, where, port), timeout)
        # ours first, like Postfix: Dovecot 2.4 sends only its VERSION line and waits for
        # the client's before MECH ... DONE
        assert proto.transport is not None
        proto.transport.write(b"VERSION\t1\t2\nCPID\t%d\n" % os.getpid())
        lines = await asyncio.wait_for(proto.greeting, timeout)
        if not lines[0].startswith(b"VERSION\t1\t"):
            raise ProtocolViolation(f"bad greeting {lines[0]!r}")
        if not any(line.startswith(b"MECH\tPLAIN") for line in lines):
            raise ProtocolViolation("server does not offer PLAIN")
        return cls(proto)

    @property
    def usable(self) -> bool:
        return not self.proto.lost

    async def request(self, tail: bytes, timeout: float) -> tuple[int, bytes]:
        """Send ``AUTH <id><tail>``; return (id, reply line). Raises TimeoutError,
        ConnectionError."""
        proto = self.proto
        if proto.lost or proto.transport is None:
            raise ConnectionError("connection already closed")
        rid = next(self.ids)
        fut = proto.loop.create_future()
        proto.pending = fut
        proto.transport.write(b"AUTH\t%d%s" % (rid, tail))
        handle = proto.loop.call_later(timeout, _expire, fut)
        try:
            line = await fut
        finally:
            handle.cancel()
        return rid, line

    def close(self) -> None:
        if self.proto.transport is not None:
            self.proto.transport.close()


def classify(line: bytes, rid: int, expect_ok: bool) -> str | None:
    """None when ``line`` is the expected verdict for request ``rid``, else the error kind."""
    parts = line.split(b"\t")
    if len(parts) < 2 or parts[1] != b"%d" % rid:
        return "protocol"
    cmd = parts[0]
    if cmd == b"OK":
        return None if expect_ok else "verdict"
    if cmd == b"FAIL":
        if b"temp" in parts[2:] or b"code=temp_fail" in parts[2:]:
            return "tempfail"
        return "verdict" if expect_ok else None
    return "protocol"


@dataclass
class LoadState:
    """Live counters of a run (read by a monitor while it runs)."""

    logins: Sequence[Login]
    tails: list[bytes]
    total: int | None
    deadline: float | None
    shuffle: random.Random | None
    issued: int = 0
    latencies: list[float] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)  # index into logins, per latency
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    verdicts: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0

    def take(self) -> int | None:
        if self.total is not None and self.issued >= self.total:
            return None
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return None
        self.issued += 1
        if self.shuffle is not None:
            return self.shuffle.randrange(len(self.logins))
        return (self.issued - 1) % len(self.logins)

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(f"{kind}: {detail}")


@dataclass
class LoadResult:
    """What a run measured; latencies in seconds."""

    target: str
    connections: int
    logins: Sequence[Login]
    latencies: list[float]
    labels: list[int]
    errors: Counter[str]
    error_samples: list[str]
    verdicts: Counter[str]
    elapsed: float
    client_cpu: float
    reconnects: int = 0
    _sorted: list[float] | None = None

    @property
    def completed(self) -> int:
        return len(self.latencies)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def throughput(self) -> float:
        return self.completed / self.elapsed if self.elapsed > 0 else 0.0

    def sorted(self) -> list[float]:
        if self._sorted is None:
            self._sorted = sorted(self.latencies)
        return self._sorted

    def pct(self, q: float) -> float:
        return percentile(self.sorted(), q)

    @property
    def p50(self) -> float:
        return self.pct(50)

    @property
    def p99(self) -> float:
        return self.pct(99)

    @property
    def max(self) -> float:
        return self.sorted()[-1] if self.latencies else float("nan")

    def by_label(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for lat, idx in zip(self.latencies, self.labels, strict=True):
            login = self.logins[idx]
            out.setdefault(login.label or login.user, []).append(lat)
        return out


async def run_load(
    target: str,
    logins: Sequence[Login],
    *,
    connections: int,
    requests: int | None = None,
    seconds: float | None = None,
    timeout: float = 60.0,
    shuffle_seed: int | None = None,
    monitor: Callable[[LoadState], Awaitable[None]] | None = None,
    connect_parallel: int = 64,
) -> LoadResult:
    """Run one load test; see the module docstring."""
    if (requests is None) == (seconds is None):
        raise ValueError("give exactly one of requests and seconds")
    if not logins:
        raise ValueError("no logins to send")
    state = LoadState(
        logins=logins,
        tails=[login.tail() for login in logins],
        total=requests,
        deadline=None,
        shuffle=random.Random(shuffle_seed) if shuffle_seed is not None else None,
    )
    gate = asyncio.Semaphore(connect_parallel)

    async def connect() -> AuthConnection | None:
        async with gate:
            try:
                return await AuthConnection.open(target, timeout)
            except (OSError, TimeoutError, ProtocolViolation, ConnectionError) as exc:
                state.error("connect", repr(exc))
                return None

    conns = await asyncio.gather(*(connect() for _ in range(connections)))
    start = asyncio.Event()

    async def worker(conn: AuthConnection | None) -> None:
        await start.wait()
        tails = state.tails
        logins_ = state.logins
        latencies = state.latencies
        labels = state.labels
        verdicts = state.verdicts
        perf = time.perf_counter
        while True:
            idx = state.take()
            if idx is None:
                break
            if conn is None or not conn.usable:
                if conn is not None:
                    state.reconnects += 1
                conn = await connect()
                if conn is None:
                    continue  # counted; the next ticket retries
            t0 = perf()
            try:
                rid, line = await conn.request(tails[idx], timeout)
            except TimeoutError:
                state.error("timeout", f"no reply within {timeout} s")
                conn.close()
                conn = None
                continue
            except ConnectionError as exc:
                state.error("closed", str(exc))
                conn = None
                continue
            latencies.append(perf() - t0)
            labels.append(idx)
            kind = classify(line, rid, logins_[idx].expect_ok)
            verdicts[line.split(b"\t", 1)[0].decode("ascii", "replace")] += 1
            if kind is not None:
                state.error(kind, f"{logins_[idx].label or logins_[idx].user}: {line[:120]!r}")
                if kind == "protocol":
                    conn.close()
                    conn = None
        if conn is not None:
            conn.close()

    tasks = [asyncio.ensure_future(worker(c)) for c in conns]
    mon = None
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t_start = time.perf_counter()
    if seconds is not None:
        state.deadline = time.monotonic() + seconds
    start.set()
    if monitor is not None:
        mon = asyncio.ensure_future(monitor(state))
    try:
        await asyncio.gather(*tasks)
    finally:
        elapsed = time.perf_counter() - t_start
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        if mon is not None:
            mon.cancel()
            await asyncio.gather(mon, return_exceptions=True)
        for t in tasks:
            t.cancel()
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return LoadResult(
        target=target,
        connections=connections,
        logins=logins,
        latencies=state.latencies,
        labels=state.labels,
        errors=state.errors,
        error_samples=state.error_samples,
        verdicts=state.verdicts,
        elapsed=elapsed,
        client_cpu=cpu,
        reconnects=state.reconnects,
    )


def summary_rows(result: LoadResult) -> list[list[object]]:
    rows: list[list[object]] = []
    groups = result.by_label()
    if len(groups) > 1:
        for label, lats in groups.items():
            s = sorted(lats)
            rows.append(
                [label, len(s), "", ms(percentile(s, 50)), ms(percentile(s, 99)), ms(s[-1])]
            )
    rows.append(
        [
            "all",
            result.completed,
            rate(result.throughput),
            ms(result.p50),
            ms(result.p99),
            ms(result.max),
        ]
    )
    return rows


def print_summary(result: LoadResult) -> None:
    print(
        table(
            ["requests", "count", "req/s", "p50 ms", "p99 ms", "max ms"],
            summary_rows(result),
        )
    )
    errs = ", ".join(f"{k}={v}" for k, v in sorted(result.errors.items())) or "none"
    print(
        f"connections={result.connections} elapsed={result.elapsed:.2f}s "
        f"errors={result.error_count} ({errs}) reconnects={result.reconnects} "
        f"client_cpu={result.client_cpu / result.elapsed * 100 if result.elapsed else 0:.0f}%"
    )
    for sample in result.error_samples:
        print(f"  error sample: {sample}")


def _parse_login(text: str) -> Login:
    parts = text.split(",")
    if len(parts) != 4 or parts[3] not in ("ok", "fail"):
        raise argparse.ArgumentTypeError("use USER,PASSWORD,RIP,ok|fail (RIP may be empty)")
    user, password, rip, verdict = parts
    return Login(user, password, rip or None, verdict == "ok", label=f"{user}@{rip}:{verdict}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, help="unix:/path or inet:127.0.0.1:PORT")
    ap.add_argument(
        "--login",
        action="append",
        type=_parse_login,
        required=True,
        metavar="USER,PASSWORD,RIP,ok|fail",
        help="a request kind and its expected verdict (repeatable; sent in turn)",
    )
    ap.add_argument("-c", "--connections", type=int, default=1)
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("-n", "--requests", type=int)
    group.add_argument("-s", "--seconds", type=float)
    ap.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, seconds")
    ap.add_argument("--shuffle", type=int, metavar="SEED", help="random order of the logins")
    args = ap.parse_args(argv)
    raise_nofile(args.connections + 256)
    result = asyncio.run(
        run_load(
            args.target,
            args.login,
            connections=args.connections,
            requests=args.requests,
            seconds=args.seconds,
            timeout=args.timeout,
            shuffle_seed=args.shuffle,
        )
    )
    print_summary(result)
    return 1 if result.error_count else 0


if __name__ == "__main__":
    sys.exit(main())
