"""Password layer: Dovecot schemes in and out, failure modes, rehash."""

from __future__ import annotations

import pytest

from saslnetauth.credentials.passwords import (
    ARGON2_MAX_MEMORY_KIB,
    PasswordHasher,
    argon2_backend,
    crypt_available,
    split_scheme,
)
from saslnetauth.errors import InvalidHashError, VerifyResourceError
from saslnetauth.policy.engine import DecisionEngine
from saslnetauth.policy.login import Login
from saslnetauth.policy.rules.netrules import NetworkRule
from saslnetauth.policy.verdict import Reason, Verdict
from saslnetauth.store import SqlStore

PASSWORD = "pässw0rd"

# Made with Dovecot 2.3.19's `doveadm pw -s SCHEME -p 'pässw0rd'`.
DOVEADM_VECTORS = {
    "SHA512-CRYPT": "{SHA512-CRYPT}$6$1zRvQVUc6uqFF5AG$C9351lBaEh60uJG1XDz3M7KkADyGhl/NGcMN.wojm2Qh1q8h/r97I8DiVLHhxrxauYTI5aPnFS3K3ugKOqfw40",
    "SHA256-CRYPT": "{SHA256-CRYPT}$5$n5.X.G/.CIqniD7L$QB8GsA/UduHlz0AqobNAhwp4leNTIZBYRPCpiFJ4XgA",
    "BLF-CRYPT": "{BLF-CRYPT}$2y$05$EqLYL/fqeSy0PX/o2.hhxuPHxYBBC1YvvQJr9227p2gWnx5u3Pp7u",
    "ARGON2I": "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$skylDmxvLy2m+Kow0gyGOQ$ggseC3O5rE3pmYn/g3fQ286ccqBlmfS8zWHR5Rhf9Mk",
    "ARGON2ID": "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$oLwyNFsIFg1PZebGr4O1lQ$3Ctxdn98XYaDCGOh76HaissdwUqYjs8rw8kloZFgDz0",
    "SSHA": "{SSHA}XHgY3uSZQ9yH9MyW0WJPVht949FixQLD",
    "SSHA256": "{SSHA256}xZy6EmMA8CsppOaYUiv8G9zK0I9WZKAIbjqKEw5kodOlTJzQ",
    "SSHA512": "{SSHA512}Uq0VVy2wxo9+ohLjzk92KxX4JHJAfoOPPW2YHepip1EooTfHoHlRxQVCfQk/yXL2/szSw4b8Zf/xo9+MKALdTFkNrwI=",
    "MD5-CRYPT": "{MD5-CRYPT}$1$EoyDizYn$oBIJUL56/c7lOi3vRP4mG0",
    "PLAIN": "{PLAIN}pässw0rd",
    "CLEARTEXT": "{CLEARTEXT}pässw0rd",
    "SMD5": "{SMD5}foEZH02YX7J62HCLR7VU+HhC3Lo=",
    "SHA": "{SHA}MztrHueWDgJ6GwPlrOK8i3NrGIc=",
    "CRYPT": "{CRYPT}$2y$05$D4rm6CccLrJUiR..JOjYfOuVwgzQgUkM2gYLNnJVphXN48L6GQzXu",
}


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher()


@pytest.mark.parametrize("scheme", sorted(DOVEADM_VECTORS))
def test_doveadm_vectors_verify(hasher: PasswordHasher, scheme: str) -> None:
    stored = DOVEADM_VECTORS[scheme]
    assert hasher.verify(PASSWORD, stored)
    assert hasher.verify(PASSWORD.encode(), stored)
    assert not hasher.verify("wrong", stored)
    assert not hasher.verify(PASSWORD + "x", stored)
    assert not hasher.verify("", stored)


@pytest.mark.parametrize(
    "scheme", ["SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "MD5-CRYPT", "ARGON2I", "ARGON2ID"]
)
def test_bare_hashes_without_prefix(hasher: PasswordHasher, scheme: str) -> None:
    bare = split_scheme(DOVEADM_VECTORS[scheme])[1]
    parsed = hasher.parse(bare)
    assert parsed.scheme == scheme
    assert parsed.stored == DOVEADM_VECTORS[scheme]
    assert hasher.verify(PASSWORD, bare)


def test_crypt_prefix_is_identified(hasher: PasswordHasher) -> None:
    assert hasher.parse(DOVEADM_VECTORS["CRYPT"]).scheme == "BLF-CRYPT"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "{FOO}bar",
        "plaintext-without-scheme",
        "{SHA512-CRYPT}$1$abc$def",
        "{ARGON2I}$argon2id$v=19$m=65536,t=3,p=1$oLwyNFsIFg1PZebGr4O1lQ$3Ctx",
        "{SSHA}***",
        "{SSHA}",
        "$6$only-salt",
        "{SHA512.HEX}abcd",
        "{BLF-CRYPT}$2y$05$short",
        "{PLAIN}with\ttab",
        "{CRYPT}not-a-crypt-string",
    ],
)
def test_unknown_or_malformed_refused(hasher: PasswordHasher, bad: str) -> None:
    with pytest.raises(InvalidHashError):
        hasher.parse(bad)
    with pytest.raises(InvalidHashError):
        hasher.verify(PASSWORD, bad)


def test_new_hashes_default_argon2id(hasher: PasswordHasher) -> None:
    stored = hasher.hash("new secret")
    assert stored.startswith("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$")
    assert hasher.verify("new secret", stored)
    assert not hasher.verify("New secret", stored)
    assert not hasher.needs_rehash(stored)


@pytest.mark.parametrize(
    "scheme", ["BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "SSHA512", "ARGON2I"]
)
def test_configurable_default_scheme(scheme: str) -> None:
    h = PasswordHasher(scheme, bcrypt_cost=4, argon2_memory_kib=256, argon2_time_cost=1)
    stored = h.hash("abc")
    assert h.parse(stored).scheme == scheme
    assert h.verify("abc", stored) and not h.verify("abd", stored)
    assert PasswordHasher().needs_rehash(stored)


def test_unsupported_default_scheme() -> None:
    with pytest.raises(InvalidHashError, match="unsupported default scheme"):
        PasswordHasher("PLAIN")


def test_bcrypt_long_password_is_truncated_like_crypt(hasher: PasswordHasher) -> None:
    h = PasswordHasher("BLF-CRYPT", bcrypt_cost=4)
    stored = h.hash("a" * 100)
    assert h.verify("a" * 72, stored)  # crypt(3) semantics: 72 significant bytes
    assert not h.verify("a" * 71, stored)


def test_overlong_and_nul_passwords_never_match(hasher: PasswordHasher) -> None:
    from saslnetauth.credentials.native import libcrypt

    def sha512(pw: bytes) -> str:
        out = libcrypt.crypt(pw, b"$6$0123456789abcdef$")
        assert out is not None
        return "{SHA512-CRYPT}" + out.decode()

    ok_pw = b"y" * 511
    assert hasher.verify(ok_pw, sha512(ok_pw))
    # libcrypt (and so Dovecot) refuses longer passphrases: a plain mismatch, not an error
    assert not hasher.verify(b"y" * 512, sha512(b"y" * 511))
    assert not hasher.verify(b"x" * 5000, DOVEADM_VECTORS["SHA512-CRYPT"])
    assert not hasher.verify("x" * 5000, "{PLAIN}" + "x" * 1000)
    stored = DOVEADM_VECTORS["SHA512-CRYPT"]
    assert not hasher.verify(PASSWORD.encode() + b"\x00junk", stored)


def test_libcrypt_used() -> None:
    assert crypt_available(), "libcrypt crypt_rn should be available on Debian"


def test_dummy_verify_never_raises(hasher: PasswordHasher) -> None:
    hasher.dummy_verify(b"\xff\xfe not utf-8")
    hasher.dummy_verify("x" * 10000)


def test_argon2_uses_libsodium_like_dovecot() -> None:

    assert argon2_backend() == "libsodium", "libsodium (Debian libsodium23) should be used"


@pytest.mark.parametrize(
    "params",
    [
        {"type": "ID", "memory_cost": 1024, "rounds": 3, "parallelism": 1},
        {"type": "ID", "memory_cost": 1024, "rounds": 1, "parallelism": 4},
        {"type": "I", "memory_cost": 2048, "rounds": 2, "parallelism": 1},
    ],
)
def test_libsodium_and_argon2_cffi_agree(params: dict[str, object]) -> None:
    from passlib.hash import argon2

    from saslnetauth.credentials.native import libsodium

    value = argon2.using(**params).hash("agree pw")
    scheme = "{ARGON2ID}" if params["type"] == "ID" else "{ARGON2I}"
    h = PasswordHasher()
    assert libsodium.handles(value)
    for pw, expected in ((b"agree pw", True), (b"agree pX", False), (b"", False)):
        assert h.verify(pw, scheme + value) is expected
        assert argon2.verify(pw, value) is expected
    assert h.verify(b"agree pw\x00", scheme + value) is False


@pytest.mark.parametrize("stored", ["{PLAIN}", "{CLEARTEXT}", "{plain}"])
def test_empty_plaintext_hash_refused_at_parse_time(hasher: PasswordHasher, stored: str) -> None:
    """Issue 11 item 4: an empty {PLAIN} hash would admit an empty password."""
    with pytest.raises(InvalidHashError, match="empty"):
        hasher.parse(stored)
    with pytest.raises(InvalidHashError):
        hasher.verify("", stored)


def test_argon2_memory_bomb_is_a_resource_error_not_a_mismatch(hasher: PasswordHasher) -> None:
    """Issue 11 item 9: an ARGON2 hash asking for absurd memory is not a wrong password."""
    salt, digest = "c2FsdHNhbHRzYWx0c2FsdA", "3Ctxdn98XYaDCGOh76HaissdwUqYjs8rw8kloZFgDz0"
    for m in (4294967295, ARGON2_MAX_MEMORY_KIB + 1):
        stored = f"{{ARGON2ID}}$argon2id$v=19$m={m},t=1,p=1${salt}${digest}"
        parsed = hasher.parse(stored)
        with pytest.raises(VerifyResourceError, match="memory"):
            hasher.verify(PASSWORD, parsed)


def test_engine_answers_tempfail_for_a_memory_bomb(
    sqlite_store: SqlStore, fast_hasher: PasswordHasher
) -> None:
    bomb = (
        "{ARGON2ID}$argon2id$v=19$m=4294967295,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$"
        "3Ctxdn98XYaDCGOh76HaissdwUqYjs8rw8kloZFgDz0"
    )
    sqlite_store.add_user("bomb", bomb, networks=[NetworkRule.parse("any")])
    d = DecisionEngine(sqlite_store, fast_hasher).decide(
        Login.of("bomb", "guess", "192.0.2.1", "smtp")
    )
    assert (d.verdict, d.reason) == (Verdict.TEMPFAIL, Reason.BACKEND_ERROR)
