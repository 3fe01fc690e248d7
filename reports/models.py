"""Daily roll-ups of reach: one row per (local day, speaker area), and which days are rolled up."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from core.clock import utcnow
from core.db import Base, UTCDateTime


class ReachDaily(Base):
    """Deliveries of the occurrences that started on `day` (local), counted per speaker area."""

    __tablename__ = "reach_daily"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    # The area a speaker belonged to at dispatch (a village, or a township/county building).
    area_code: Mapped[str] = mapped_column(String(12), primary_key=True)
    targeted: Mapped[int] = mapped_column(Integer, default=0)
    played: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    no_report: Mapped[int] = mapped_column(Integer, default=0)
    # skipped or preempted (final, but neither played nor failed); a rolled-up day has nothing else
    other: Mapped[int] = mapped_column(Integer, default=0)


class ReachDay(Base):
    """A day whose roll-up is complete: every occurrence that started on it was final."""

    __tablename__ = "reach_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    zone: Mapped[str] = mapped_column(String(64))  # the IANA zone the day is local to
    rolled_up_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
