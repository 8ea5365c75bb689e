"""The policy endpoint over real sockets (``saslnetauth serve`` with ``[policy] listen``),
and its request parser fuzzed without sockets."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saslnetauth.serve.http.policyrequest import parse_request
from tests.support.clitools import run
from tests.support.serverproc import ServerProcess, free_port, run_server

KEY = "X-Policy-Key"
SECRET = "s3cret-header-value"
#: The [policy] keys every listener needs: its shared secret.
SECRET_KEYS = f'api_header = "{KEY}: {SECRET}"\n'


def policy_config(path: Path, text: str) -> Path:
    """A configuration file holding the secret: unreadable by other users, as serve demands."""
    path.write_text(text)
    path.chmod(0o600)
    return path


SLOW_OK = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SLOW_OK
@given(st.binary(max_size=600))
def test_parse_request_never_crashes(body: bytes) -> None:
    try:
        req = parse_request(body)
    except ValueError:
        return
    assert isinstance(req.login, str) and len(req.login) <= 512


@SLOW_OK
@given(
    st.dictionaries(
        st.sampled_from(["login", "remote", "protocol", "success", "policy_reject", "fail_type"]),
        st.one_of(
            st.none(), st.booleans(), st.integers(), st.text(max_size=40), st.lists(st.none())
        ),
    )
)
def test_parse_request_json_shapes(data: dict[str, object]) -> None:
    try:
        req = parse_request(json.dumps(data).encode())
    except ValueError:
        assert any(
            k in data and not isinstance(data[k], str) for k in ("login", "remote", "protocol")
        ) or any(isinstance(v, str) and not v.isprintable() for v in data.values())
        return
    assert req.success in (True, False, None)


class Endpoint:
    def __init__(self, server: ServerProcess, port: int, db: str) -> None:
        self.server, self.port, self.db = server, port, db

    def conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def ask(
        self,
        c: http.client.HTTPConnection,
        command: str,
        body: dict[str, object],
        key: str | None = SECRET,
    ) -> tuple[int, dict[str, object]]:
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers[KEY] = key
        c.request("POST", f"/?command={command}", json.dumps(body), headers)
        resp = c.getresponse()
        return resp.status, json.loads(resp.read())


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    tmp = tmp_path_factory.mktemp("policy")
    db = f"sqlite:///{tmp}/p.db"
    assert run("init", db=db).code == 0
    add = ["user", "add", "alice", "--hash", "{PLAIN}x", "--net", "127.0.0.2", "--net", "::1"]
    assert run(*add, db=db).code == 0
    # carol's addresses are for the brake (alice's must stay unbraked)
    add = ["user", "add", "carol", "--hash", "{PLAIN}x", "--net", "127.0.0.5", "--net", "127.0.0.6"]
    assert run(*add, db=db).code == 0
    port = free_port()
    cfg = policy_config(
        Path(tmp) / "c.toml",
        f'[policy]\nlisten = "inet:127.0.0.1:{port}"\n{SECRET_KEYS}'
        "max_body = 1024\nrequest_timeout = 1.0\nidle_timeout = 2.0\n"
        "[serve]\npenalty_free_failures = 1\n",
    )
    with run_server(db, config=cfg) as srv:
        srv.wait_log("policy listening")
        yield Endpoint(srv, port, db)


def body(login: str, remote: str, **more: object) -> dict[str, object]:
    """The default attributes of Dovecot 2.4 (2.3: the same without fail_type)."""
    return {
        "device_id": "",
        "login": login,
        "protocol": "imap",
        "pwhash": "0a4",
        "remote": remote,
        "session_id": "",
        "tls": False,
        **more,
    }


def test_allow_and_refuse(endpoint: Endpoint) -> None:
    c = endpoint.conn()
    assert endpoint.ask(c, "allow", body("alice", "127.0.0.2")) == (200, {"status": 0})
    assert endpoint.ask(c, "allow", body("Alice", "::1", fail_type="")) == (200, {"status": 0})
    status, answer = endpoint.ask(c, "allow", body("alice", "127.0.0.3"))
    assert (status, answer["status"]) == (200, -1) and answer["msg"] == "Authentication failed."
    assert endpoint.ask(c, "allow", body("nosuch", "127.0.0.2"))[1]["status"] == -1
    assert endpoint.ask(c, "allow", body("alice", "not an address"))[1]["status"] == -1
    report = body("alice", "127.0.0.2", success=True, policy_reject=False)
    assert endpoint.ask(c, "report", report) == (200, {"status": 0})
    c.close()


def test_api_header_required(endpoint: Endpoint) -> None:
    c = endpoint.conn()
    for key in (None, "wrong", SECRET + "x", "", SECRET[:-1]):
        for command in ("allow", "report"):
            status, answer = endpoint.ask(c, command, body("alice", "127.0.0.2"), key=key)
            assert (status, answer) == (401, {"status": -1, "msg": "unauthorized"})
    c.close()
    # a GET without the secret is refused as unauthorised too, before anything else
    reply = raw_exchange(endpoint.port, b"GET /?command=allow HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 401 ")


def test_requests_without_the_secret_change_nothing(endpoint: Endpoint) -> None:
    """Issue 21, item 1: forged reports neither log an auth event (fail2ban would ban
    on it) nor raise the brake; a forged success writes no "auth ok"; allow answers
    nobody without the secret (no enumeration of users and networks)."""
    c = endpoint.conn()
    fail = body("carol", "127.0.0.6", success=False, policy_reject=False, fail_type="credentials")
    sent = 0
    for key in (None, "wrong", SECRET + "x"):
        for _ in range(6):
            assert endpoint.ask(c, "report", fail, key=key)[0] == 401
            sent += 1
        assert (
            endpoint.ask(c, "report", body("carol", "127.0.0.6", success=True), key=key)[0] == 401
        )
        assert endpoint.ask(c, "allow", body("carol", "127.0.0.6"), key=key)[0] == 401
        sent += 2
    # with penalty_free_failures = 1, one counted failure would answer a tarpit here
    assert endpoint.ask(c, "allow", body("carol", "127.0.0.6")) == (200, {"status": 0})
    c.close()
    text = endpoint.server.wait_log("policy request refused: no or wrong api header")
    assert "rip=127.0.0.6" not in text and "user=carol" not in text
    # logged at most once a minute, with the count of refusals since the last line
    assert 1 <= text.count("policy request refused") < sent


def test_brake_answers_a_tarpit(endpoint: Endpoint) -> None:
    c = endpoint.conn()
    fail = body("carol", "127.0.0.5", success=False, policy_reject=False, fail_type="credentials")
    for _ in range(3):
        endpoint.ask(c, "report", fail)
    status, answer = endpoint.ask(c, "allow", body("carol", "127.0.0.5"))
    assert status == 200 and isinstance(answer["status"], int) and answer["status"] > 0
    # a success report only adds evidence: the brake stays (issue 21: one report of
    # success used to clear it, and the next guess came at full speed)
    endpoint.ask(c, "report", body("carol", "127.0.0.5", success=True))
    status, after = endpoint.ask(c, "allow", body("carol", "127.0.0.5"))
    assert status == 200 and isinstance(after["status"], int)
    assert after["status"] >= answer["status"] > 0
    text = endpoint.server.wait_log("auth fail: user=carol service=imap rip=127.0.0.5")
    assert "reason=bad_password via=policy" in text
    endpoint.server.wait_log("auth ok: user=carol service=imap rip=127.0.0.5")


def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_limits(endpoint: Endpoint) -> None:
    big = b"x" * 2000
    head = f"POST /?command=allow HTTP/1.1\r\nHost: x\r\n{KEY}: {SECRET}\r\n"
    reply = raw_exchange(endpoint.port, f"{head}Content-Length: 2000\r\n\r\n".encode() + big)
    assert reply.startswith(b"HTTP/1.1 413 ")
    many = "".join(f"X-H{i}: v\r\n" for i in range(100))
    reply = raw_exchange(endpoint.port, f"{head}{many}Content-Length: 2\r\n\r\n{{}}".encode())
    assert reply.startswith(b"HTTP/1.1 431 ")
    reply = raw_exchange(endpoint.port, b"GARBAGE\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ")
    reply = raw_exchange(endpoint.port, f"{head}Content-Length: 9\r\n\r\n[1, 2, 3]".encode())
    assert reply.startswith(b"HTTP/1.1 400 ") and b'"status": -1' in reply


def test_slow_and_idle_clients_are_cut_off(endpoint: Endpoint) -> None:
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=15) as s:
        s.sendall(b"POST /?command=allow HTTP/1.1\r\nHost: x\r\n")  # never finished
        assert s.recv(100).startswith(b"HTTP/1.1 408 ")
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=15) as s:
        assert s.recv(100) == b""  # idle: closed without a word


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=300))
def test_fuzz_over_a_real_socket(endpoint: Endpoint, data: bytes) -> None:
    reply = raw_exchange(endpoint.port, b"POST /?command=allow HTTP/1.1\r\n" + data)
    # never an allow for junk: an error status, or nothing at all
    assert b'"status": 0' not in reply
    assert reply == b"" or reply.startswith(b"HTTP/1.1 4")


def test_200_concurrent_keepalive_clients(endpoint: Endpoint) -> None:
    async def client(n: int) -> list[bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
        out = []
        for i in range(5):
            rip = "127.0.0.2" if (n + i) % 2 == 0 else "127.0.0.3"
            payload = json.dumps(body("alice", rip)).encode()
            writer.write(
                b"POST /?command=allow HTTP/1.1\r\nHost: x\r\n"
                + f"{KEY}: {SECRET}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")
            out.append(await reader.readuntil(b"}"))
            out[-1] = (b"ok" if b'"status": 0' in out[-1] else b"no") + rip.encode()
        writer.close()
        return out

    async def main() -> list[list[bytes]]:
        return await asyncio.gather(*(client(n) for n in range(200)))

    results = [r for rs in asyncio.run(main()) for r in rs]
    assert len(results) == 1000
    assert all(r in (b"ok127.0.0.2", b"no127.0.0.3") for r in results)
    assert results.count(b"ok127.0.0.2") == 500


def test_non_loopback_peer_refused(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/p.db"
    assert run("init", db=db).code == 0
    port = free_port()
    cfg = policy_config(
        tmp_path / "c.toml",
        f'[policy]\nlisten = "inet:127.0.0.1:{port}"\nallow_from = ["127.0.0.2/32"]\n{SECRET_KEYS}',
    )
    with run_server(db, config=cfg) as srv:
        srv.wait_log("policy listening")
        data = (
            f"POST /?command=allow HTTP/1.1\r\nHost: x\r\n{KEY}: {SECRET}\r\n"
            "Content-Length: 2\r\n\r\n{}"
        ).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(data)
            # closed without an answer (a reset: our request was left unread)
            with contextlib.suppress(ConnectionResetError):
                assert s.recv(100) == b""
        with socket.create_connection(
            ("127.0.0.1", port), timeout=10, source_address=("127.0.0.2", 0)
        ) as s:
            s.sendall(data)
            assert b'{"status": -1' in s.recv(200)  # answered (no login: refused)
        srv.wait_log("policy connection refused")


def test_reports_reach_the_record(tmp_path: Path) -> None:
    """Dovecot's reports land in the verdict record behind `saslnetauth report`; in
    after_auth mode a refusal counts as a correct password from a forbidden network."""
    db = f"sqlite:///{tmp_path}/p.db"
    assert run("init", db=db).code == 0
    assert run("user", "add", "alice", "--hash", "{PLAIN}x", "--net", "127.0.0.2", db=db).code == 0
    port = free_port()
    cfg = policy_config(
        tmp_path / "c.toml",
        f'[policy]\nlisten = "inet:127.0.0.1:{port}"\nmode = "after_auth"\n{SECRET_KEYS}',
    )
    with run_server(db, config=cfg) as srv:
        srv.wait_log("policy listening")
        ep = Endpoint(srv, port, db)
        c = ep.conn()
        # without the secret, no alert and no "credentials_valid=yes" (issue 21)
        assert ep.ask(c, "allow", body("alice", "192.0.2.51"), key=None)[0] == 401
        assert ep.ask(c, "allow", body("alice", "192.0.2.50"))[1]["status"] == -1
        refused = body("alice", "192.0.2.50", success=False, policy_reject=True, fail_type="policy")
        ep.ask(c, "report", refused)
        ep.ask(c, "report", body("alice", "127.0.0.2", success=True))
        wrong = body("alice", "127.0.0.2", success=False, fail_type="credentials")
        ep.ask(c, "report", wrong)
        c.close()
        text = srv.wait_log("credentials_valid=yes")
        assert "192.0.2.51" not in text and text.count("credentials_valid=yes") == 1
    res = run("report", "--json", db=db)
    assert res.code == 0, res.err
    report = json.loads(res.out)
    assert report["verdicts"] == {"ok": 1, "fail": 2}
    assert report["failures_by_reason"] == {"network": 1, "bad_password": 1}
    stolen = report["stolen_credentials"]
    assert [(s["user"], s["address"], s["services"]) for s in stolen] == [
        ("alice", "192.0.2.50", ["imap"])
    ]


@pytest.mark.parametrize(
    ("keys", "mode", "error"),
    [
        ("", 0o600, "policy.api_header: required with policy.listen"),
        ('api_header = "X-API-Key: CHANGE-ME-random-secret"\n', 0o600, "placeholder"),
        ('api_header = "X-API-Key: short"\n', 0o600, "at least 16 characters"),
        (SECRET_KEYS, 0o644, "readable by every local user"),
    ],
)
def test_no_policy_listener_without_a_secret(
    tmp_path: Path, keys: str, mode: int, error: str
) -> None:
    """serve refuses to start a policy listener anyone could talk to (issue 21)."""
    db = f"sqlite:///{tmp_path}/p.db"
    assert run("init", db=db).code == 0
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[policy]\nlisten = "inet:127.0.0.1:{free_port()}"\n{keys}')
    cfg.chmod(mode)
    res = run(
        "--config",
        str(cfg),
        "serve",
        "--listen",
        f"unix:{tmp_path}/s",
        db=db,
        timeout=30,
        process=True,
    )
    assert res.code != 0 and error in res.err, res.err
    assert "openssl rand -hex 32" in res.err or "chmod o-r" in res.err
