"""Alembic environment: every domain's models on one metadata, URL from the caller."""

from __future__ import annotations

from alembic import context

import devices.models  # noqa: F401  (registers tables)
import reports.models  # noqa: F401
import scheduler.models  # noqa: F401
import tts.models  # noqa: F401
from core import models as core_models  # noqa: F401
from core.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Leave APScheduler's job table alone: APScheduler creates and owns it."""
    return not (type_ == "table" and name == "apscheduler_jobs")


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
