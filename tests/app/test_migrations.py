"""Alembic creates the whole schema from empty on SQLite and on PostgreSQL, matching app.models."""
from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.migrate import alembic_config, upgrade_database
from app.models import Base
from tests import service_harness as harness

TABLES = {"tenants", "api_keys", "models", "jobs", "artifacts", "alembic_version"}


def _assert_schema_matches(url: str) -> None:
    engine = create_engine(url)
    try:
        assert TABLES <= set(inspect(engine).get_table_names())
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == [], diff
    finally:
        engine.dispose()


def test_sqlite_from_empty(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh' / 'zerodata.db'}"
    upgrade_database(url)
    _assert_schema_matches(url)
    upgrade_database(url)  # idempotent: a second start changes nothing
    command.downgrade(alembic_config(url), "base")
    engine = create_engine(url)
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()


def test_postgres_from_empty(pg_url):
    name, url = harness.create_database()  # its own empty database, not the shared test one
    try:
        upgrade_database(url)
        _assert_schema_matches(url)
    finally:
        harness.drop_database(name)
