"""Past ``[serve] max_pending``, a client network with a recent success still gets a
place (docs/floods.md): a flood of guesses from fresh addresses fills the bound,
the real user is not refused for overload; a fresh address is."""

from __future__ import annotations

from pathlib import Path

from tests.support.clitools import init_with_user
from tests.support.serverproc import b64, run_server

PW = "res3rve pw"
HOME = "127.0.0.2"


def _auth(req_id: int, user: str, password: str, rip: str) -> str:
    resp = b64(f"\0{user}\0{password}")
    return f"AUTH\t{req_id}\tPLAIN\tservice=smtp\tnologin\tlip=127.0.0.1\trip={rip}\tresp={resp}\n"


def test_the_real_user_gets_a_reserved_place_past_max_pending(tmp_path: Path) -> None:
    db = init_with_user(f"sqlite:///{tmp_path}/r.db", "alice", PW, HOME)
    cfg = tmp_path / "c.toml"
    cfg.write_text(  # a slow hash: the unknown name's dummy verification holds the place
        "[passwords]\nargon2_memory_kib = 65536\nargon2_time_cost = 3\n"
        "[serve]\nmax_pending = 1\npenalty_max = 0\nworkers = 1\n"
    )
    with run_server(db, config=cfg) as srv:
        c = srv.connect()
        c.handshake()
        c.send(_auth(1, "alice", PW, HOME))
        assert c.line().startswith("OK\t1\t")  # its network now had a success
        # one write, read together: a guess takes the one place, the real user the
        # reserve's one place; the real user's password from a fresh address, and the
        # real user again, find no place
        c.send(
            _auth(2, "ghost", "guess", "198.51.100.7")
            + _auth(3, "alice", PW, HOME)
            + _auth(4, "alice", PW, "203.0.113.9")
            + _auth(5, "alice", PW, HOME)
        )
        replies = {}
        while len(replies) < 4:
            line = c.line()
            replies[int(line.split("\t")[1])] = line
        log = srv.log()
    assert replies[2].startswith("FAIL\t2\t") and "temp" not in replies[2]
    assert replies[3].startswith("OK\t3\t"), replies
    for overloaded in (4, 5):
        assert replies[overloaded].startswith(f"FAIL\t{overloaded}\t"), replies
        assert "code=temp_fail" in replies[overloaded]
    assert log.count("reason=overload") == 2
