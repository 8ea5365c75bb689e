"""The userdb lookup answer (auth-master USER) for the Lua userdb: pure, no sockets."""

from __future__ import annotations

import pytest

from saslnetauth.errors import BackendError
from saslnetauth.policy.model import UserRecord
from saslnetauth.serve.authsocket.userdb import answer

USERS = {
    "alice": UserRecord(id=1, name="alice", password_hash=None, enabled=True),
    "bob": UserRecord(id=2, name="bob", password_hash=None, enabled=False),
}


def lookup(name: str) -> UserRecord | None:
    return USERS.get(name)


def down(name: str) -> UserRecord | None:
    raise BackendError("database down")


def test_enabled_user_found_with_canonical_name() -> None:
    assert answer("USER\t7\tAlice\tservice=lmtp", lookup) == "USER\t7\talice"


@pytest.mark.parametrize("name", ["bob", "nosuch", "", "a\x01tb"])
def test_disabled_unknown_or_invalid_not_found(name: str) -> None:
    assert answer(f"USER\t3\t{name}\tservice=imap", lookup) == "NOTFOUND\t3"


def test_database_down_is_a_temporary_failure_not_notfound() -> None:
    reply = answer("USER\t4\talice", down)
    assert reply is not None and reply.startswith("FAIL\t4\t")


def test_pam_any_user_admits_system_users_only() -> None:
    assert answer("USER\t5\troot", lookup, pam_any_user=True) == "USER\t5\troot"
    assert answer("USER\t5\tno-such-system-user", lookup, pam_any_user=True) == "NOTFOUND\t5"
    assert answer("USER\t5\troot", lookup) == "NOTFOUND\t5"


def test_other_commands_ignored_and_malformed_refused() -> None:
    assert answer("VERSION\t1\t2", lookup) is None
    assert answer("CPID\t42", lookup) is None
    for bad in ("USER", "USER\tx\talice", "USER\t12345678901\talice"):
        with pytest.raises(ValueError):
            answer(bad, lookup)
