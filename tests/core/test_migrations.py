from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

import devices.models  # noqa: F401  (register every table on Base.metadata, as env.py does)
import scheduler.models  # noqa: F401
import tts.models  # noqa: F401
from api.migrate import upgrade
from core import models  # noqa: F401
from core.db import Base, make_engine


def _schema(url: str) -> dict[str, list[str]]:
    engine = make_engine(url)
    try:
        insp = inspect(engine)
        return {
            table: sorted(col["name"] for col in insp.get_columns(table))
            + sorted(ix["name"] or "" for ix in insp.get_indexes(table))
            for table in insp.get_table_names()
        }
    finally:
        engine.dispose()


def _version(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]
    finally:
        engine.dispose()


def test_upgrade_creates_every_table(database_url):
    assert _schema(database_url) == {}
    upgrade(database_url)
    schema = _schema(database_url)
    assert set(schema) == set(Base.metadata.tables) | {"alembic_version"}
    for name, table in Base.metadata.tables.items():
        assert {c.name for c in table.columns} <= set(schema[name]), name


def test_upgrade_twice_is_a_no_op(database_url):
    upgrade(database_url)
    before, version = _schema(database_url), _version(database_url)
    upgrade(database_url)
    assert _schema(database_url) == before
    assert _version(database_url) == version and len(version) == 1


def test_models_and_migrations_agree(engine):
    """A model changed without a migration shows up here as a diff."""
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_sqlite_url_fixture_is_empty(sqlite_url):
    engine = create_engine(sqlite_url)
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
