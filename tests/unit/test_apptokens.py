"""The app password token: shape, parsing, stored hash, labels (pure)."""

from __future__ import annotations

import hashlib
import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from saslnetauth.credentials.apptokens import (
    ALPHABET,
    ID_LENGTH,
    SECRET_LENGTH,
    check_label,
    hash_token,
    new_token,
    parse_token,
    valid_hash,
    valid_token_id,
    verify_token,
)
from saslnetauth.errors import InvalidInputError

TOKEN_RE = re.compile(r"^[a-hjkmnp-z]{4}(-[a-hjkmnp-z]{4}){8}$")


def test_a_new_token_is_typeable_and_carries_128_bits_of_secret() -> None:
    token, token_id, stored = new_token()
    assert TOKEN_RE.match(token), token
    assert not set("ilo0123456789") & set(token)
    assert SECRET_LENGTH * math.log2(len(ALPHABET)) >= 128
    letters = token.replace("-", "")
    assert token_id == letters[:ID_LENGTH] and valid_token_id(token_id)
    # the documented stored form, as an admin script would compute it
    assert stored == "sha256:" + hashlib.sha256(letters.encode()).hexdigest()
    assert valid_hash(stored) and verify_token(letters, stored)


def test_tokens_differ() -> None:
    tokens = {new_token()[0] for _ in range(200)}
    assert len(tokens) == 200


@pytest.mark.parametrize(
    "typed",
    [
        "{t}",
        "{T}",
        "{t}".replace("-", ""),
        "{t}".replace("-", " "),
        " {t} ",
        "{C}",  # a phone capitalised the first letter
    ],
)
def test_parse_accepts_case_dashes_and_spaces(typed: str) -> None:
    token, token_id, stored = new_token()
    text = typed.format(t=token, T=token.upper(), C=token[0].upper() + token[1:])
    parsed = parse_token(text.encode())
    assert parsed is not None
    assert parsed[0] == token_id and verify_token(parsed[1], stored)


@pytest.mark.parametrize(
    "password",
    [
        b"",
        b"s3cret pw",
        b"abcd-efgh",  # too short
        b"abcdefghjkmnpqrstuvwxyzabcdefghjkmnpq",  # 37 letters
        b"abcdefghjkmnpqrstuvwxyzabcdefghjkmni",  # 'i' is not in the alphabet
        b"abcdefghjkmnpqrstuvwxyzabcdefghjkm1",  # a digit
        "abcdefghjkmnpqrstuvwxyzabcdefghjkmé".encode(),
        b"\xff" * 36,
        b"-" * 70 + b"abcdefghjkmnpqrstuvwxyzabcdefghjkmn",  # longer than any token text
    ],
)
def test_other_passwords_are_not_tokens(password: bytes) -> None:
    assert parse_token(password) is None


@given(st.binary(max_size=80))
def test_parse_never_raises(data: bytes) -> None:
    parsed = parse_token(data)
    if parsed is not None:
        assert len(parsed[1]) == ID_LENGTH + SECRET_LENGTH and parsed[1].startswith(parsed[0])


def test_a_wrong_secret_does_not_verify() -> None:
    token, _, stored = new_token()
    letters = token.replace("-", "")
    other = letters[:-1] + ("a" if letters[-1] != "a" else "b")
    assert not verify_token(other, stored)
    assert hash_token(letters) == stored


@pytest.mark.parametrize("stored", ["", "sha256:", "sha256:" + "A" * 64, "{PLAIN}x", None, 5])
def test_malformed_stored_hashes_are_invalid(stored: object) -> None:
    assert not valid_hash(stored)


@pytest.mark.parametrize("label", ["phone", "laptop-2", "Thunderbird.office", "a", "x" * 64])
def test_good_labels(label: str) -> None:
    assert check_label(label) == label


@pytest.mark.parametrize("label", ["", "-phone", "my phone", "x" * 65, "tab\there", "é"])
def test_bad_labels_are_refused_with_the_rule(label: str) -> None:
    with pytest.raises(InvalidInputError, match="letters, digits"):
        check_label(label)
