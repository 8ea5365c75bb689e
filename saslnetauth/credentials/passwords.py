"""Password hashing and verification, Dovecot-compatible.

Stored hashes use Dovecot's notation ``{SCHEME}value`` (doc: Dovecot
"Password Schemes"), so a row can be copied to or from a Dovecot
passwd-file unchanged. Accepted on input with or without the prefix:

=============== ============================== =============================
Dovecot scheme  value looks like               verified by
=============== ============================== =============================
ARGON2ID        ``$argon2id$v=19$...``         libsodium ``crypto_pwhash_str_verify``
                                               (or argon2-cffi via passlib)
ARGON2I         ``$argon2i$v=19$...``          libsodium (or argon2-cffi)
BLF-CRYPT       ``$2y$``/``$2b$``/``$2a$``     libcrypt ``crypt_rn`` (or passlib)
SHA512-CRYPT    ``$6$...``                     libcrypt ``crypt_rn`` (or passlib)
SHA256-CRYPT    ``$5$...``                     libcrypt ``crypt_rn`` (or passlib)
MD5-CRYPT       ``$1$...``                     libcrypt ``crypt_rn`` (or passlib)
CRYPT/DES-CRYPT 13 chars                       libcrypt ``crypt_rn`` (or passlib)
SSHA/256/512    base64(digest + salt)          passlib ``ldap_salted_sha*``
SMD5, SHA/SHA1  base64                         passlib ``ldap_*``
PLAIN/CLEARTEXT the password itself            constant-time compare (warned)
=============== ============================== =============================

Every fact about a scheme is one row of :data:`SCHEME_TABLE`. ``crypt_rn``
from the system's libcrypt and libsodium's ARGON2 (the libraries Dovecot
itself uses) are called through ctypes (:mod:`saslnetauth.credentials.native`),
which releases the GIL; argon2-cffi and bcrypt release it too.

An unknown or malformed hash raises :class:`InvalidHashError` when it is
stored and when it is verified; it never verifies as correct.
"""

from __future__ import annotations

import contextlib
import hmac
import re
import threading
from dataclasses import dataclass
from typing import Any

from saslnetauth.credentials.native import argon2_backend, crypt_available, libcrypt, libsodium
from saslnetauth.errors import InvalidHashError, VerifyResourceError

__all__ = [
    "DEFAULT_SCHEME",
    "PLAINTEXT_SCHEMES",
    "SCHEMES",
    "SCHEME_TABLE",
    "PasswordHasher",
    "Scheme",
    "argon2_backend",
    "crypt_available",
    "split_scheme",
]

DEFAULT_SCHEME = "ARGON2ID"
#: Parsed stored hashes remembered at most (the cache is emptied when full).
PARSE_CACHE_SIZE = 20_000
#: Maximum password length we ever hash or verify (bytes); longer is a FAIL.
MAX_PASSWORD_BYTES = 4096
#: libxcrypt refuses longer passphrases (CRYPT_MAX_PASSPHRASE_SIZE); so does Dovecot.
CRYPT_MAX_PASSPHRASE = 511  # bytes, without the terminating NUL
#: bcrypt only reads 72 bytes; crypt(3) truncates, so do we (Dovecot compatible).
BCRYPT_MAX_BYTES = 72
#: Most memory (KiB) an ARGON2 hash may ask for to be verified: 4 GiB. A stored hash
#: asking for more fails temporarily (never as a wrong password), before any allocation.
ARGON2_MAX_MEMORY_KIB = 4 * 1024 * 1024

_SCHEME_RE = re.compile(r"^\{([A-Za-z0-9_.-]{1,32})\}")


@dataclass(frozen=True, slots=True)
class Scheme:
    """One Dovecot password scheme: everything the hasher knows about it."""

    name: str  # canonical Dovecot name
    kind: str  # "argon2", "crypt", "ldap" (base64 digests) or "plain"
    #: passlib handler: the fallback (crypt, argon2) or the verifier (ldap)
    handler: str = ""
    #: crypt(3) prefixes of its values (bare values are recognised by them)
    prefixes: tuple[str, ...] = ()
    #: other names, stored as ``name`` (``{MD5}`` becomes ``{MD5-CRYPT}``)
    aliases: tuple[str, ...] = ()
    #: other names, kept as written (Dovecot treats them alike)
    synonyms: tuple[str, ...] = ()
    #: usable as [passwords] default_scheme for new hashes
    new_hashes: bool = False


SCHEME_TABLE: tuple[Scheme, ...] = (
    Scheme("ARGON2ID", "argon2", "argon2", new_hashes=True),
    Scheme("ARGON2I", "argon2", "argon2", aliases=("ARGON2",), new_hashes=True),
    Scheme(
        "BLF-CRYPT", "crypt", "bcrypt", ("$2y$", "$2b$", "$2a$"), aliases=("BLF",), new_hashes=True
    ),
    Scheme("SHA512-CRYPT", "crypt", "sha512_crypt", ("$6$",), new_hashes=True),
    Scheme("SHA256-CRYPT", "crypt", "sha256_crypt", ("$5$",), new_hashes=True),
    Scheme("MD5-CRYPT", "crypt", "md5_crypt", ("$1$",), aliases=("MD5",)),
    Scheme("DES-CRYPT", "crypt", "des_crypt", synonyms=("CRYPT",)),
    Scheme("SSHA", "ldap", "ldap_salted_sha1"),
    Scheme("SSHA256", "ldap", "ldap_salted_sha256"),
    Scheme("SSHA512", "ldap", "ldap_salted_sha512", new_hashes=True),
    Scheme("SMD5", "ldap", "ldap_salted_md5"),
    Scheme("SHA", "ldap", "ldap_sha1", synonyms=("SHA1",)),
    Scheme("PLAIN", "plain", synonyms=("CLEARTEXT",)),
)
#: Every accepted name (canonical names and aliases) -> its scheme. ``{CRYPT}``
#: means any crypt(3) hash: its value decides (DES-CRYPT for 13 characters).
SCHEMES: dict[str, Scheme] = {
    name: s for s in SCHEME_TABLE for name in (s.name, *s.aliases, *s.synonyms)
}
PLAINTEXT_SCHEMES = frozenset(n for n, s in SCHEMES.items() if s.kind == "plain")
_NEW_HASH_SCHEMES = tuple(s.name for s in SCHEME_TABLE if s.new_hashes)
#: crypt(3) prefix -> scheme, longest prefixes first
_CRYPT_PREFIXES: tuple[tuple[str, Scheme], ...] = tuple(
    (p, s) for s in SCHEME_TABLE for p in s.prefixes
)
_DES_RE = re.compile(r"^[./0-9A-Za-z]{13}$")
_CRYPT_VALUE_RE = re.compile(r"^\$[0-9a-z]{1,2}\$[./0-9A-Za-z$,=]+$")
_ARGON_RE = re.compile(r"^\$argon2(id|i)\$")


def _canonical(name: str) -> str:
    """An accepted scheme name in upper case, aliases replaced by their scheme."""
    upper = name.upper()
    scheme = SCHEMES.get(upper)
    return scheme.name if scheme is not None and upper in scheme.aliases else upper


def split_scheme(stored: str) -> tuple[str | None, str]:
    """Split ``{SCHEME}value`` into (upper-case scheme or None, value)."""
    m = _SCHEME_RE.match(stored)
    if not m:
        return None, stored
    return m.group(1).upper(), stored[m.end() :]


_ARGON2_MEMORY = re.compile(r"\$m=(\d+),", re.ASCII)


def _check_argon2_memory(value: str) -> None:
    """VerifyResourceError when the hash asks for more than ARGON2_MAX_MEMORY_KIB."""
    m = _ARGON2_MEMORY.search(value)
    if m and int(m.group(1)) > ARGON2_MAX_MEMORY_KIB:
        raise VerifyResourceError(
            f"ARGON2 hash asks for {int(m.group(1))} KiB of memory, "
            f"more than the limit of {ARGON2_MAX_MEMORY_KIB} KiB"
        )


# --- the hasher --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedHash:
    scheme: str  # canonical Dovecot scheme name
    value: str  # the part after {SCHEME}

    @property
    def stored(self) -> str:
        return f"{{{self.scheme}}}{self.value}"

    @property
    def plaintext(self) -> bool:
        return self.scheme in PLAINTEXT_SCHEMES


def _handler(name: str) -> Any:
    from passlib import hash as passlib_hash  # lazy: keeps light importers light

    return getattr(passlib_hash, name)


class PasswordHasher:
    """Creates new hashes in the configured scheme and verifies stored ones."""

    def __init__(
        self,
        default_scheme: str = DEFAULT_SCHEME,
        *,
        argon2_memory_kib: int = 65536,
        argon2_time_cost: int = 3,
        argon2_parallelism: int = 1,
        bcrypt_cost: int = 10,
        sha_crypt_rounds: int = 5000,
    ) -> None:
        scheme = _canonical(default_scheme)
        if scheme not in _NEW_HASH_SCHEMES:
            raise InvalidHashError(
                f"unsupported default scheme {default_scheme!r}; "
                f"choose one of {', '.join(_NEW_HASH_SCHEMES)}"
            )
        self.default_scheme = scheme
        self._argon2 = (argon2_memory_kib, argon2_time_cost, argon2_parallelism)
        self._bcrypt_cost = bcrypt_cost
        self._sha_rounds = sha_crypt_rounds
        self._dummy: ParsedHash | None = None
        self._dummy_lock = threading.Lock()
        self._parsed: dict[str, ParsedHash] = {}

    # -- parsing -------------------------------------------------------------

    def parse(self, stored: str) -> ParsedHash:
        """Validate a hash given by an admin or read from the database.

        Accepts ``{SCHEME}value`` or a bare crypt/argon2 string and returns
        the canonical form. Raises :class:`InvalidHashError` otherwise.
        Valid results are remembered (bounded), since the engine parses the
        same stored hashes on every login.
        """
        cached = self._parsed.get(stored) if isinstance(stored, str) else None
        if cached is not None:
            return cached
        parsed = self._parse(stored)
        if len(self._parsed) >= PARSE_CACHE_SIZE:
            self._parsed.clear()
        self._parsed[stored] = parsed
        return parsed

    def _parse(self, stored: str) -> ParsedHash:
        if not isinstance(stored, str) or not stored:
            raise InvalidHashError("empty password hash")
        if len(stored) > 1024 or any(c in stored for c in "\t\r\n\x00"):
            raise InvalidHashError("password hash is too long or contains control characters")
        scheme, value = split_scheme(stored)
        if scheme is None:
            return self._identify_bare(value)
        if "." in scheme:
            raise InvalidHashError(
                f"scheme {{{scheme}}}: encoding suffixes (.hex, .b64) are not supported"
            )
        scheme = _canonical(scheme)
        entry = SCHEMES.get(scheme)
        if entry is None:
            raise InvalidHashError(
                f"unknown password scheme {{{scheme}}}; supported: {', '.join(sorted(SCHEMES))}"
            )
        if not value:
            if entry.kind == "plain":  # would admit an empty password
                raise InvalidHashError(f"{{{scheme}}} hash is empty: refusing an empty password")
            raise InvalidHashError(f"{{{scheme}}} hash has no value")
        if entry.kind == "plain":
            return ParsedHash(scheme, value)
        if entry.kind == "crypt":
            return self._parse_crypt(scheme, value)
        if entry.kind == "argon2":
            m = _ARGON_RE.match(value)
            if not m or ("ARGON2ID" if m.group(1) == "id" else "ARGON2I") != scheme:
                raise InvalidHashError(f"{{{scheme}}} value is not an {scheme.lower()} hash")
            self._check_passlib("argon2", value, scheme)
            return ParsedHash(scheme, value)
        self._check_passlib(entry.handler, f"{{{entry.name}}}{value}", scheme)
        return ParsedHash(scheme, value)

    def _identify_bare(self, value: str) -> ParsedHash:
        m = _ARGON_RE.match(value)
        if m:
            return self.parse(("{ARGON2ID}" if m.group(1) == "id" else "{ARGON2I}") + value)
        for prefix, scheme in _CRYPT_PREFIXES:
            if value.startswith(prefix):
                return self._parse_crypt(scheme.name, value)
        raise InvalidHashError(
            "unrecognised password hash: give it with its Dovecot scheme prefix, "
            "e.g. {SHA512-CRYPT}$6$... or {PLAIN}secret"
        )

    def _parse_crypt(self, scheme: str, value: str) -> ParsedHash:
        detected = next((s for p, s in _CRYPT_PREFIXES if value.startswith(p)), None)
        if detected is None:
            if scheme in ("CRYPT", "DES-CRYPT") and _DES_RE.match(value):
                return ParsedHash("DES-CRYPT", value)
            raise InvalidHashError(f"{{{scheme}}} value is not a recognised crypt(3) hash")
        if scheme not in ("CRYPT", detected.name):
            raise InvalidHashError(f"{{{scheme}}} value is a {detected.name} hash")
        if not _CRYPT_VALUE_RE.match(value):
            raise InvalidHashError(f"malformed {detected.name} hash")
        self._check_passlib(detected.handler, value, detected.name)
        return ParsedHash(detected.name, value)

    @staticmethod
    def _check_passlib(handler: str, value: str, scheme: str) -> None:
        try:
            ok = _handler(handler).identify(value)
            if ok and getattr(_handler(handler).from_string(value), "checksum", "") is None:
                raise ValueError("the hash has no checksum part")
        except (ValueError, TypeError) as exc:
            raise InvalidHashError(f"malformed {scheme} hash: {exc}") from None
        if not ok:
            raise InvalidHashError(f"malformed {scheme} hash")

    # -- hashing and verifying -------------------------------------------------

    def hash(self, password: str | bytes, scheme: str | None = None) -> str:
        """Hash a new password; returns ``{SCHEME}value``."""
        secret = _to_bytes(password)
        if len(secret) > MAX_PASSWORD_BYTES:
            raise InvalidHashError(f"password longer than {MAX_PASSWORD_BYTES} bytes")
        name = _canonical(scheme or self.default_scheme)
        mem, time_cost, par = self._argon2
        if name in ("ARGON2ID", "ARGON2I"):
            h = _handler("argon2").using(
                type="ID" if name == "ARGON2ID" else "I",
                memory_cost=mem,
                rounds=time_cost,
                parallelism=par,
            )
            return f"{{{name}}}{h.hash(secret)}"
        if name == "BLF-CRYPT":
            value = (
                _handler("bcrypt")
                .using(rounds=self._bcrypt_cost, ident="2y")
                .hash(secret[:BCRYPT_MAX_BYTES])
            )
            return f"{{{name}}}{value}"
        if name in ("SHA512-CRYPT", "SHA256-CRYPT"):
            handler = _handler(SCHEMES[name].handler).using(rounds=self._sha_rounds)
            return f"{{{name}}}{handler.hash(secret)}"
        if name == "SSHA512":
            value = _handler(SCHEMES[name].handler).hash(secret)
            return f"{{{name}}}{value[len('{SSHA512}') :]}"
        raise InvalidHashError(f"cannot create new hashes with scheme {name}")

    def verify(self, password: str | bytes, stored: str | ParsedHash) -> bool:
        """True when ``password`` matches ``stored``.

        Raises :class:`InvalidHashError` when ``stored`` is unusable; never
        returns True for it.
        """
        parsed = stored if isinstance(stored, ParsedHash) else self.parse(stored)
        secret = _to_bytes(password)
        if len(secret) > MAX_PASSWORD_BYTES:
            return False
        entry = SCHEMES[parsed.scheme]
        try:
            if entry.kind == "plain":
                return hmac.compare_digest(secret, parsed.value.encode("utf-8"))
            if entry.kind == "crypt":
                return self._verify_crypt(secret, parsed)
            if entry.kind == "argon2":
                _check_argon2_memory(parsed.value)
                if b"\x00" not in secret and libsodium.handles(parsed.value):
                    return libsodium.verify(parsed.value, secret)
                return bool(_handler(entry.handler).verify(secret, parsed.value))
            prefixed = f"{{{entry.name}}}{parsed.value}"
            return bool(_handler(entry.handler).verify(secret, prefixed))
        except MemoryError:
            raise VerifyResourceError(f"out of memory verifying a {parsed.scheme} hash") from None
        except (ValueError, TypeError) as exc:
            raise InvalidHashError(f"cannot verify {parsed.scheme} hash: {exc}") from None

    def _verify_crypt(self, secret: bytes, parsed: ParsedHash) -> bool:
        if parsed.scheme == "BLF-CRYPT":
            secret = secret[:BCRYPT_MAX_BYTES]
        if b"\x00" in secret or len(secret) > CRYPT_MAX_PASSPHRASE:
            return False  # crypt(3) cannot see past a NUL or take more: never match
        setting = parsed.value.encode("ascii")
        if libcrypt.fn is not None:
            out = libcrypt.crypt(secret, setting)
            if out is None:
                raise InvalidHashError(f"libcrypt refused the {parsed.scheme} hash")
            return hmac.compare_digest(out, setting)
        return bool(_handler(SCHEMES[parsed.scheme].handler).verify(secret, parsed.value))

    def dummy_verify(self, password: str | bytes) -> None:
        """Spend the time of a real verification against the default scheme.

        Used for unknown users and users without a hash, so that timing
        does not reveal which names exist.
        """
        if self._dummy is None:
            with self._dummy_lock:
                if self._dummy is None:
                    self._dummy = self.parse(self.hash(b"saslnetauth dummy password"))
        with contextlib.suppress(Exception):  # the result is ignored on purpose
            self.verify(password, self._dummy)

    def needs_rehash(self, stored: str | ParsedHash) -> bool:
        """True when ``stored`` is not in the default scheme with current costs."""
        parsed = stored if isinstance(stored, ParsedHash) else self.parse(stored)
        if parsed.scheme != self.default_scheme:
            return True
        if parsed.scheme in ("ARGON2ID", "ARGON2I"):
            mem, time_cost, par = self._argon2
            return f"m={mem},t={time_cost},p={par}$" not in parsed.value
        if parsed.scheme == "BLF-CRYPT":
            return parsed.value[4:7] != f"{self._bcrypt_cost:02d}$"
        return False


def _to_bytes(password: str | bytes) -> bytes:
    if isinstance(password, bytes):
        return password
    return password.encode("utf-8", "surrogateescape")
