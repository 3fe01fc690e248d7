"""Migration 0008: reports stored twice before it (every broker blip) are kept once after it."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from api.migrate import upgrade
from core.db import make_engine

ROW = (
    "INSERT INTO reports (device_id, occurrence_id, state, reported_at, received_at) "
    "VALUES (:d, 7, :s, :at, :at)"
)


def test_duplicates_stored_before_0008_are_removed_and_new_ones_refused(database_url):
    upgrade(database_url, "0007")
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            for device, state, at in [
                ("a1", "received", "2026-03-02 08:00:00.000000"),
                ("a1", "received", "2026-03-02 08:00:00.000000"),  # the resend after a blip
                ("a1", "playing", "2026-03-02 08:00:05.000000"),
                ("a1", "playing", "2026-03-02 08:00:05.000000"),
                ("a1", "playing", "2026-03-02 08:00:05.000000"),
                ("a2", "received", "2026-03-02 08:00:00.000000"),
            ]:
                conn.execute(text(ROW), {"d": device, "s": state, "at": at})
        upgrade(database_url)
        with engine.connect() as conn:
            kept = conn.execute(text("SELECT id, device_id, state FROM reports ORDER BY id")).all()
            columns = set(conn.execute(text("SELECT * FROM deliveries WHERE 1 = 0")).keys())
        assert [(d, s) for _, d, s in kept] == [("a1", "received"), ("a1", "playing"), ("a2", "received")]
        assert [i for i, _, _ in kept] == [1, 3, 6]  # the first of each is the one kept
        assert {"duration_s", "seconds_reported"} <= set(columns)
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text(ROW), {"d": "a2", "s": "received", "at": "2026-03-02 08:00:00.000000"})
    finally:
        engine.dispose()
