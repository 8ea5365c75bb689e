"""Schema creation and upgrades through Alembic, without an alembic.ini."""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.exc import SQLAlchemyError

from saslnetauth.errors import BackendError
from saslnetauth.store.sql import SqlStore


def _config(store: SqlStore) -> Config:
    cfg = Config()
    location = resources.files("saslnetauth._migrations")
    cfg.set_main_option("script_location", str(location))
    cfg.set_main_option("sqlalchemy.url", store.url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest revision shipped with this code."""
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("saslnetauth._migrations")))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def upgrade(store: SqlStore, revision: str = "head") -> None:
    """Create or upgrade the schema (idempotent)."""
    _run(store, command.upgrade, revision)


def downgrade(store: SqlStore, revision: str) -> None:
    _run(store, command.downgrade, revision)


def _run(store: SqlStore, fn: object, revision: str) -> None:
    cfg = _config(store)
    try:
        with store.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            fn(cfg, revision)  # type: ignore[operator]
    except SQLAlchemyError as exc:
        raise BackendError(f"migration failed on {store.describe()}: {exc}") from None
    store.invalidate()
