"""The main-password services column on every database (SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations

from saslnetauth.store import SqlStore


def test_column_on_every_database(store: SqlStore) -> None:
    store.add_user("dave", None)
    assert store.get_user("dave").main_password_services is None  # type: ignore[union-attr]
    store.set_main_password_services("dave", "smtp,submission")
    lean, detailed = store.get_user("dave"), store.get_user("dave", details=True)
    assert lean is not None and detailed is not None
    assert lean.main_password_services == detailed.main_password_services == "smtp,submission"
    assert detailed.to_json()["main_password_services"] == "smtp,submission"
