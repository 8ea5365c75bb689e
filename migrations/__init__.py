"""Alembic environment of saslnetauth (installed as ``saslnetauth._migrations``)."""
