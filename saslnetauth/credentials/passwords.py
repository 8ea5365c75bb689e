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

``crypt_rn`` from the system's libcrypt and ``crypto_pwhash_str_verify``
from libsodium (the libraries Dovecot itself uses) are called through
ctypes, which releases the GIL; argon2-cffi and bcrypt release it too.

An unknown or malformed hash raises :class:`InvalidHashError` when it is
stored and when it is verified; it never verifies as correct.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import errno
import hmac
import re
import threading
from dataclasses import dataclass
from typing import Any

from saslnetauth.errors import InvalidHashError, VerifyResourceError

__all__ = [
    "DEFAULT_SCHEME",
    "SCHEMES",
    "PasswordHasher",
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

# Dovecot scheme name -> (kind, passlib handler name or None)
SCHEMES: dict[str, str] = {
    "ARGON2ID": "argon2",
    "ARGON2I": "argon2",
    "BLF-CRYPT": "crypt",
    "SHA512-CRYPT": "crypt",
    "SHA256-CRYPT": "crypt",
    "MD5-CRYPT": "crypt",
    "DES-CRYPT": "crypt",
    "CRYPT": "crypt",
    "SSHA": "ldap_salted_sha1",
    "SSHA256": "ldap_salted_sha256",
    "SSHA512": "ldap_salted_sha512",
    "SMD5": "ldap_salted_md5",
    "SHA": "ldap_sha1",
    "SHA1": "ldap_sha1",
    "PLAIN": "plain",
    "CLEARTEXT": "plain",
}
_ALIASES = {"MD5": "MD5-CRYPT", "BLF": "BLF-CRYPT", "ARGON2": "ARGON2I"}
PLAINTEXT_SCHEMES = frozenset({"PLAIN", "CLEARTEXT"})

# crypt(3) prefix -> (Dovecot scheme, passlib handler used when libcrypt lacks it)
_CRYPT_PREFIXES: tuple[tuple[str, str, str], ...] = (
    ("$6$", "SHA512-CRYPT", "sha512_crypt"),
    ("$5$", "SHA256-CRYPT", "sha256_crypt"),
    ("$2y$", "BLF-CRYPT", "bcrypt"),
    ("$2b$", "BLF-CRYPT", "bcrypt"),
    ("$2a$", "BLF-CRYPT", "bcrypt"),
    ("$1$", "MD5-CRYPT", "md5_crypt"),
)
_DES_RE = re.compile(r"^[./0-9A-Za-z]{13}$")
_CRYPT_VALUE_RE = re.compile(r"^\$[0-9a-z]{1,2}\$[./0-9A-Za-z$,=]+$")
_ARGON_RE = re.compile(r"^\$argon2(id|i)\$")

# Scheme names accepted for *new* hashes, with the passlib settings used.
_NEW_HASH_SCHEMES = ("ARGON2ID", "ARGON2I", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT", "SSHA512")


def split_scheme(stored: str) -> tuple[str | None, str]:
    """Split ``{SCHEME}value`` into (upper-case scheme or None, value)."""
    m = _SCHEME_RE.match(stored)
    if not m:
        return None, stored
    return m.group(1).upper(), stored[m.end() :]


# --- libcrypt through ctypes -------------------------------------------------

_CRYPT_DATA_SIZE = 32768  # sizeof(struct crypt_data) in libxcrypt


def _system_library(name: str, *, use_errno: bool = False) -> ctypes.CDLL | None:
    """The system's shared library ``name`` (as for ``-lname``), or None."""
    path = ctypes.util.find_library(name)
    if not path:
        return None
    try:
        return ctypes.CDLL(path, use_errno=use_errno)
    except OSError:
        return None


class _LibCrypt:
    def __init__(self) -> None:
        self.fn: Any = None
        lib = _system_library("crypt")
        fn = getattr(lib, "crypt_rn", None)
        if fn is None:
            return
        fn.restype = ctypes.c_char_p
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
        self.fn = fn
        self._local = threading.local()

    def crypt(self, password: bytes, setting: bytes) -> bytes | None:
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = ctypes.create_string_buffer(_CRYPT_DATA_SIZE)
        out = self.fn(password, setting, buf, _CRYPT_DATA_SIZE)
        if not out or out.startswith(b"*"):
            return None
        return bytes(out)


_libcrypt = _LibCrypt()


def crypt_available() -> bool:
    """True when the system libcrypt (crypt_rn) is used for crypt hashes."""
    return _libcrypt.fn is not None


# --- libsodium through ctypes (ARGON2, as Dovecot does) ------------------------------

_SODIUM_PARAMS = re.compile(r"^\$argon2i?d?\$v=19\$m=(\d{1,10}),t=(\d{1,10}),p=(\d{1,3})\$")
_ARGON2_MEMORY = re.compile(r"\$m=(\d+),")


def _check_argon2_memory(value: str) -> None:
    """VerifyResourceError when the hash asks for more than ARGON2_MAX_MEMORY_KIB."""
    m = _ARGON2_MEMORY.search(value)
    if m and int(m.group(1)) > ARGON2_MAX_MEMORY_KIB:
        raise VerifyResourceError(
            f"ARGON2 hash asks for {int(m.group(1))} KiB of memory, "
            f"more than the limit of {ARGON2_MAX_MEMORY_KIB} KiB"
        )


_SODIUM_FULL = re.compile(
    r"^\$argon2(id|i)\$v=19\$m=(\d{1,10}),t=(\d{1,10}),p=1\$([A-Za-z0-9+/]{22})\$([A-Za-z0-9+/]{22,})$"
)
_ALG = {"id": 2, "i": 1}  # crypto_pwhash_ALG_ARGON2ID13, crypto_pwhash_ALG_ARGON2I13


def _b64_unpadded(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


class _LibSodium:
    """ARGON2I/ARGON2ID from the system libsodium (the library Dovecot uses): about
    twice as fast as argon2-cffi's bundled code.

    ``crypto_pwhash_str_verify`` returns -1 both for a wrong password and when
    its memory cannot be allocated (libsodium 1.0.18 sets EINVAL either way), so
    the usual hash (one lane, 16-byte salt, as ``doveadm pw`` and passlib make
    it) is computed with ``crypto_pwhash``, which cannot "mismatch": any -1 from
    it is an error (ENOMEM: :class:`VerifyResourceError`), and the digests are
    compared here. Other shapes go to ``crypto_pwhash_str_verify``."""

    def __init__(self) -> None:
        self.fn: Any = None
        self.raw: Any = None
        lib = _system_library("sodium", use_errno=True)
        init = getattr(lib, "sodium_init", None)
        fn = getattr(lib, "crypto_pwhash_str_verify", None)
        if init is None or fn is None or init() < 0:
            return
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulonglong]
        fn.restype = ctypes.c_int
        self.fn = fn
        raw = getattr(lib, "crypto_pwhash", None)
        if raw is not None:
            raw.argtypes = [
                ctypes.c_char_p,
                ctypes.c_ulonglong,
                ctypes.c_char_p,
                ctypes.c_ulonglong,
                ctypes.c_char_p,
                ctypes.c_ulonglong,
                ctypes.c_size_t,
                ctypes.c_int,
            ]
            raw.restype = ctypes.c_int
            self.raw = raw

    def handles(self, value: str) -> bool:
        """libsodium takes version 19 strings with p >= 1 and m >= 8 KiB per lane."""
        if self.fn is None:
            return False
        m = _SODIUM_PARAMS.match(value)
        if not m:
            return False
        mem, time_cost, lanes = (int(g) for g in m.groups())
        return lanes >= 1 and time_cost >= 1 and mem >= 8 * lanes

    def verify(self, value: str, secret: bytes) -> bool:
        """True on a match, False on a mismatch; VerifyResourceError when libsodium
        could not compute the hash (no memory)."""
        m = _SODIUM_FULL.match(value) if self.raw is not None else None
        if m is not None:
            kind, mem, time_cost, salt_text, digest_text = m.groups()
            digest = _b64_unpadded(digest_text)
            out = ctypes.create_string_buffer(len(digest))
            ctypes.set_errno(0)
            rc = self.raw(
                out,
                len(digest),
                secret,
                len(secret),
                _b64_unpadded(salt_text),
                int(time_cost),
                int(mem) * 1024,
                _ALG[kind],
            )
            if rc == 0:
                return hmac.compare_digest(out.raw, digest)
            code = ctypes.get_errno()
            if code != errno.EINVAL:  # EINVAL: limits crypto_pwhash refuses (argon2i t < 3)
                raise VerifyResourceError(
                    f"libsodium could not compute the ARGON2 hash: "
                    f"{errno.errorcode.get(code, code)}"
                )
        ctypes.set_errno(0)
        if int(self.fn(value.encode("ascii"), secret, len(secret))) == 0:
            return True
        code = ctypes.get_errno()
        if code in (errno.EINVAL, 0):  # a mismatch (1.0.18 cannot tell more)
            return False
        raise VerifyResourceError(
            f"libsodium could not verify the ARGON2 hash: {errno.errorcode.get(code, code)}"
        )


_libsodium = _LibSodium()


def argon2_backend() -> str:
    """Which code verifies ARGON2 hashes: "libsodium" or "argon2-cffi"."""
    return "libsodium" if _libsodium.fn is not None else "argon2-cffi"


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
        scheme = _ALIASES.get(default_scheme.upper(), default_scheme.upper())
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
        scheme = _ALIASES.get(scheme, scheme)
        kind = SCHEMES.get(scheme)
        if kind is None:
            raise InvalidHashError(
                f"unknown password scheme {{{scheme}}}; supported: {', '.join(sorted(SCHEMES))}"
            )
        if not value:
            if kind == "plain":  # would admit an empty password
                raise InvalidHashError(f"{{{scheme}}} hash is empty: refusing an empty password")
            raise InvalidHashError(f"{{{scheme}}} hash has no value")
        if kind == "plain":
            return ParsedHash(scheme, value)
        if kind == "crypt":
            return self._parse_crypt(scheme, value)
        if kind == "argon2":
            m = _ARGON_RE.match(value)
            if not m or ("ARGON2ID" if m.group(1) == "id" else "ARGON2I") != scheme:
                raise InvalidHashError(f"{{{scheme}}} value is not an {scheme.lower()} hash")
            self._check_passlib("argon2", value, scheme)
            return ParsedHash(scheme, value)
        self._check_passlib(kind, f"{{{_ldap_prefix(kind)}}}{value}", scheme)
        return ParsedHash(scheme, value)

    def _identify_bare(self, value: str) -> ParsedHash:
        m = _ARGON_RE.match(value)
        if m:
            return self.parse(("{ARGON2ID}" if m.group(1) == "id" else "{ARGON2I}") + value)
        for prefix, scheme, _ in _CRYPT_PREFIXES:
            if value.startswith(prefix):
                return self._parse_crypt(scheme, value)
        raise InvalidHashError(
            "unrecognised password hash: give it with its Dovecot scheme prefix, "
            "e.g. {SHA512-CRYPT}$6$... or {PLAIN}secret"
        )

    def _parse_crypt(self, scheme: str, value: str) -> ParsedHash:
        detected = None
        for prefix, name, _ in _CRYPT_PREFIXES:
            if value.startswith(prefix):
                detected = name
                break
        if detected is None:
            if scheme in ("CRYPT", "DES-CRYPT") and _DES_RE.match(value):
                return ParsedHash("DES-CRYPT", value)
            raise InvalidHashError(f"{{{scheme}}} value is not a recognised crypt(3) hash")
        if scheme not in ("CRYPT", detected):
            raise InvalidHashError(f"{{{scheme}}} value is a {detected} hash")
        if not _CRYPT_VALUE_RE.match(value):
            raise InvalidHashError(f"malformed {detected} hash")
        handler = next(h for p, _, h in _CRYPT_PREFIXES if value.startswith(p))
        self._check_passlib(handler, value, detected)
        return ParsedHash(detected, value)

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
        name = _ALIASES.get((scheme or self.default_scheme).upper(), scheme or self.default_scheme)
        name = name.upper()
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
            handler = "sha512_crypt" if name == "SHA512-CRYPT" else "sha256_crypt"
            return f"{{{name}}}{_handler(handler).using(rounds=self._sha_rounds).hash(secret)}"
        if name == "SSHA512":
            value = _handler("ldap_salted_sha512").hash(secret)
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
        kind = SCHEMES[parsed.scheme]
        try:
            if kind == "plain":
                return hmac.compare_digest(secret, parsed.value.encode("utf-8"))
            if kind == "crypt":
                return self._verify_crypt(secret, parsed)
            if kind == "argon2":
                _check_argon2_memory(parsed.value)
                if b"\x00" not in secret and _libsodium.handles(parsed.value):
                    return _libsodium.verify(parsed.value, secret)
                return bool(_handler("argon2").verify(secret, parsed.value))
            prefixed = f"{{{_ldap_prefix(kind)}}}{parsed.value}"
            return bool(_handler(kind).verify(secret, prefixed))
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
        if _libcrypt.fn is not None:
            out = _libcrypt.crypt(secret, setting)
            if out is None:
                raise InvalidHashError(f"libcrypt refused the {parsed.scheme} hash")
            return hmac.compare_digest(out, setting)
        handler = {
            "SHA512-CRYPT": "sha512_crypt",
            "SHA256-CRYPT": "sha256_crypt",
            "BLF-CRYPT": "bcrypt",
            "MD5-CRYPT": "md5_crypt",
            "DES-CRYPT": "des_crypt",
        }[parsed.scheme]
        return bool(_handler(handler).verify(secret, parsed.value))

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


def _ldap_prefix(handler: str) -> str:
    return {
        "ldap_salted_sha1": "SSHA",
        "ldap_salted_sha256": "SSHA256",
        "ldap_salted_sha512": "SSHA512",
        "ldap_salted_md5": "SMD5",
        "ldap_sha1": "SHA",
    }[handler]


def _to_bytes(password: str | bytes) -> bytes:
    if isinstance(password, bytes):
        return password
    return password.encode("utf-8", "surrogateescape")
