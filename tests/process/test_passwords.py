"""Password schemes against doveadm pw, and libsodium's allocation failure in a child process under an address-space limit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from saslnetauth.credentials.passwords import (
    PasswordHasher,
    argon2_backend,
)
from tests.support.peers import missing, require_binary


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher()


_ENOMEM_PROBE = """
import resource, sys
from saslnetauth.credentials.passwords import PasswordHasher
from saslnetauth.errors import VerifyResourceError
h = PasswordHasher()
stored = h.parse(sys.argv[1])
soft = 1 << 30  # 1 GiB of address space: the 2 GiB the hash asks for cannot be had
resource.setrlimit(resource.RLIMIT_AS, (soft, resource.RLIM_INFINITY))
try:
    print("verified", h.verify("p\u00e4ssw0rd", stored))
except VerifyResourceError as exc:
    print("resource error:", exc)
"""


@pytest.mark.peer
@pytest.mark.parametrize(
    "scheme", ["SHA512-CRYPT", "BLF-CRYPT", "ARGON2ID", "SSHA512", "MD5-CRYPT"]
)
def test_live_doveadm_pw(hasher: PasswordHasher, scheme: str) -> None:
    doveadm = require_binary("doveadm")
    out = subprocess.run(
        [doveadm, "pw", "-s", scheme, "-p", "live pw"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert hasher.verify("live pw", out)
    assert not hasher.verify("live pX", out)


@pytest.mark.peer
def test_doveadm_verifies_our_hashes(hasher: PasswordHasher) -> None:
    """Hashes we create are usable by Dovecot itself (export / passwd-file)."""
    doveadm = require_binary("doveadm")
    for scheme in ("ARGON2ID", "SHA512-CRYPT", "BLF-CRYPT", "SSHA512"):
        stored = PasswordHasher(scheme, bcrypt_cost=5).hash("our pw")
        res = subprocess.run(
            [doveadm, "pw", "-t", stored, "-p", "our pw"], capture_output=True, text=True
        )
        assert res.returncode == 0 and "verified" in res.stdout, (scheme, res.stdout, res.stderr)


def test_libsodium_allocation_failure_is_a_resource_error(tmp_path: Path) -> None:
    """Issue 11 item 9: libsodium returns -1 for a mismatch and for ENOMEM alike;
    the allocation failure must raise (TEMPFAIL), not read as a wrong password."""
    if argon2_backend() != "libsodium":
        missing("libsodium (libsodium23)")
    # a valid-looking hash under the 4 GiB limit whose allocation the rlimit refuses
    stored = (
        "{ARGON2ID}$argon2id$v=19$m=2097152,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$"
        "3Ctxdn98XYaDCGOh76HaissdwUqYjs8rw8kloZFgDz0"
    )
    r = subprocess.run(
        [sys.executable, "-c", _ENOMEM_PROBE, stored],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("resource error:") and "ENOMEM" in r.stdout, r.stdout
