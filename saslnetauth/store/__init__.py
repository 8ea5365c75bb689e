"""Storage: the only package that imports SQLAlchemy (and Alembic)."""

from saslnetauth.store.sql import SqlStore, sqlite_path

__all__ = ["SqlStore", "sqlite_path"]
