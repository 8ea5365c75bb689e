"""Exception hierarchy of saslnetauth.

::

    SaslNetAuthError                 every error this package raises on purpose
    +-- ConfigError                  bad configuration file or option
    +-- InvalidInputError            bad admin or client input (clear message)
    |   +-- InvalidNetworkError      a network that does not parse
    |   +-- InvalidHashError         a hash with an unknown or broken scheme
    |   +-- InvalidUsernameError     empty, too long, or containing control chars
    |   +-- InvalidServiceError      a service name that is not a plain word
    |   +-- ProtocolError            a malformed line from an auth client
    +-- NotFoundError                no such user or network (admin operations)
    +-- AlreadyExistsError           duplicate user or network (admin operations)
    +-- BackendError                 infrastructure failure: database, PAM, pool
        +-- SchemaOutdatedError      the database schema is not the current one
        +-- VerifyResourceError      no memory (or other resource) to verify a hash

A ``BackendError`` during a login always becomes TEMPFAIL, never OK.
"""

from __future__ import annotations


class SaslNetAuthError(Exception):
    """Base class of every error raised on purpose by saslnetauth."""


class ConfigError(SaslNetAuthError):
    """The configuration file or an option is invalid."""


class InvalidInputError(SaslNetAuthError, ValueError):
    """Input from an admin or a client is invalid."""


class InvalidNetworkError(InvalidInputError):
    """A network specification does not parse."""


class InvalidHashError(InvalidInputError):
    """A password hash uses an unknown scheme or is malformed."""


class InvalidUsernameError(InvalidInputError):
    """A user name is empty, too long or contains forbidden characters."""


class InvalidServiceError(InvalidInputError):
    """A service name is not a plain lower-case word."""


class ProtocolError(InvalidInputError):
    """A client sent something the wire protocol does not allow."""


class NotFoundError(SaslNetAuthError, LookupError):
    """The named user or network does not exist."""


class AlreadyExistsError(SaslNetAuthError):
    """The named user or network exists already."""


class BackendError(SaslNetAuthError):
    """An infrastructure failure (database, PAM, worker pool)."""


class SchemaOutdatedError(BackendError):
    """The database schema is missing or older/newer than this code."""


class VerifyResourceError(BackendError):
    """A hash could not be verified for want of memory or another resource
    (not a wrong password: the login fails temporarily)."""
