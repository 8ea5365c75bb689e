"""Property-based fuzzing: the parsers only ever raise the project's own errors."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.dovecot.protocol import AuthRequest, ServerCodec
from saslnetauth.dovecot.sasl import LoginMechanism, PlainMechanism, SaslFailure, decode_base64
from saslnetauth.errors import (
    InvalidHashError,
    InvalidNetworkError,
    InvalidServiceError,
    ProtocolError,
)
from saslnetauth.policy.rules.netrules import NetworkRule, parse_address
from saslnetauth.policy.rules.networks import parse_network
from tests.support.clitools import run
from tests.support.serverproc import ServerProcess, run_server

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

commands = st.sampled_from(["AUTH", "CONT", "CPID", "VERSION", "FOO", "", "OK"])
field = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="\t\n"), max_size=20),
    st.sampled_from(
        [
            "resp=",
            "resp==",
            "rip=",
            "rip=NULL",
            "lip=NULL",
            "service=smtp",
            "1",
            "PLAIN",
            "LOGIN",
            "nologin",
            "secured",
            "rip=::ffff:1.2.3.4",
        ]
    ),
    st.integers(min_value=-5, max_value=2**33).map(str),
)
lines = st.builds(lambda c, fs: "\t".join([c, *fs]), commands, st.lists(field, max_size=8))


@FUZZ
@given(st.binary(max_size=4096))
def test_codec_arbitrary_bytes(data: bytes) -> None:
    codec = ServerCodec(max_line=512)
    with contextlib.suppress(ProtocolError):
        codec.receive_data(b"VERSION\t1\t2\n" + data)


@FUZZ
@given(st.lists(lines, max_size=10), st.integers(min_value=1, max_value=64))
def test_codec_plausible_lines_any_chunking(ls: list[str], chunk: int) -> None:
    data = ("VERSION\t1\t2\n" + "\n".join(ls) + "\n").encode("utf-8", "surrogatepass")
    codec = ServerCodec()
    try:
        for i in range(0, len(data), chunk):
            for ev in codec.receive_data(data[i : i + chunk]):
                if isinstance(ev, AuthRequest):
                    assert 0 <= ev.id < 2**32
                    ev.rip  # noqa: B018 - must not raise
    except ProtocolError:
        pass


@FUZZ
@given(st.binary(max_size=600))
def test_sasl_decoders(data: bytes) -> None:
    for mech in (PlainMechanism(), LoginMechanism()):
        step = mech.start(data)
        if not isinstance(step, SaslFailure):
            mech.step(data)
    text = base64.b64encode(data).decode()
    assert decode_base64(text) == data
    decode_base64(data.decode("latin-1"))


@FUZZ
@given(st.one_of(st.text(max_size=60), st.from_regex(r"[0-9a-fA-F:.%/\[\]]{0,45}", fullmatch=True)))
def test_network_parser(text: str) -> None:
    try:
        spec, nets, _ = parse_network(text)
    except InvalidNetworkError:
        return
    assert parse_network(spec)[1] == nets  # canonical form parses to the same networks
    parse_address(text)


@FUZZ
@given(st.text(max_size=40), st.one_of(st.none(), st.text(max_size=30)))
def test_rule_with_services(net: str, services: str | None) -> None:
    with contextlib.suppress(InvalidNetworkError, InvalidServiceError):
        NetworkRule.parse(net, services)


HASHER = PasswordHasher("ARGON2ID", argon2_memory_kib=256, argon2_time_cost=1)


@FUZZ
@given(
    st.one_of(
        st.text(max_size=120),
        st.builds(
            lambda s, v: "{" + s + "}" + v,
            st.sampled_from(
                ["SHA512-CRYPT", "BLF-CRYPT", "ARGON2ID", "SSHA", "PLAIN", "CRYPT", "X"]
            ),
            st.text(max_size=100),
        ),
    )
)
def test_hash_parser_never_crashes(stored: str) -> None:
    try:
        parsed = HASHER.parse(stored)
    except InvalidHashError:
        return
    with contextlib.suppress(InvalidHashError):
        HASHER.verify(b"password", parsed)


@FUZZ
@given(st.binary(max_size=700))
def test_checkpassword_input_parser(data: bytes) -> None:
    from saslnetauth.dovecot.checkpassword import MAX_INPUT, parse_input

    try:
        user, password = parse_input(data)
    except ProtocolError:
        assert len(data) > MAX_INPUT or data.count(b"\0") < 2 or data.startswith(b"\0")
        return
    assert user and b"\0" not in user and b"\0" not in password
    assert data.startswith(user + b"\0" + password + b"\0")


SERVER_FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("fuzz")
    db = f"sqlite:///{tmp}/f.db"
    assert run("init", db=db).code == 0
    assert run("user", "add", "alice", "--hash", "{PLAIN}pw", "--net", "any", db=db).code == 0
    cfg = tmp / "c.toml"
    cfg.write_text("[serve]\npenalty_max = 0\ncont_timeout = 1.0\n")
    with run_server(db, config=cfg) as srv:
        yield srv


@SERVER_FUZZ
@given(
    st.one_of(
        st.binary(max_size=2048),
        st.lists(lines, max_size=8).map(
            lambda ls: ("\n".join(ls) + "\n").encode("utf-8", "surrogatepass")
        ),
    )
)
def test_server_survives_fuzz_over_a_real_socket(
    live_server: ServerProcess, payload: bytes
) -> None:
    c = live_server.connect()
    try:
        while c.line() != "DONE":
            pass
        c.send(b"VERSION\t1\t2\nCPID\t1\n" + payload)
        c.closed(timeout=0.05)  # whatever the server makes of it
    except (OSError, EOFError):
        pass
    finally:
        c.close()
    ok = live_server.connect()
    ok.handshake()
    ok.plain(1, "alice", "pw")
    assert ok.line() == "OK\t1\tuser=alice"
    ok.close()


def test_no_tracebacks_after_fuzzing(live_server: ServerProcess) -> None:
    log = live_server.log()
    assert "Traceback" not in log and "request failed" not in log
