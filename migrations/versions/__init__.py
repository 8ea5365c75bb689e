"""Alembic revisions of saslnetauth's schema."""
