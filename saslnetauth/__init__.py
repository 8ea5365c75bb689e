"""saslnetauth: reject valid SASL logins that come from outside a user's networks.

The package is layered (see ``../shared/DESIGN.md`` of the project):

* pure, no I/O: :mod:`saslnetauth.netrules`, :mod:`saslnetauth.verdict`,
  :mod:`saslnetauth.logfmt` (and the wire codec modules);
* storage: :mod:`saslnetauth.store` (the only place importing SQLAlchemy);
* credentials: :mod:`saslnetauth.passwords`;
* the one decision engine: :mod:`saslnetauth.engine`;
* frontends: :mod:`saslnetauth.cli` and the servers.
"""

from saslnetauth.errors import (
    BackendError,
    ConfigError,
    InvalidHashError,
    InvalidNetworkError,
    InvalidUsernameError,
    SaslNetAuthError,
    SchemaOutdatedError,
)
from saslnetauth.verdict import Decision, Reason, Verdict

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "ConfigError",
    "Decision",
    "InvalidHashError",
    "InvalidNetworkError",
    "InvalidUsernameError",
    "Reason",
    "SaslNetAuthError",
    "SchemaOutdatedError",
    "Verdict",
    "__version__",
]
