"""Alembic environment: run by ``saslnetauth init`` / ``saslnetauth db upgrade``.

It can also be used with the ``alembic`` command from a checkout
(``alembic -x url=sqlite:///x.db upgrade head``, see ``alembic.ini``).
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context

from saslnetauth.store.schema import metadata

config = context.config
target_metadata = metadata


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    url = (
        url
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("SASLNETAUTH_DATABASE_URL")
    )
    if not url:
        raise SystemExit("no database URL: pass -x url=... or set SASLNETAUTH_DATABASE_URL")
    return url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = sa.create_engine(_url(), poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
