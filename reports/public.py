"""What a village's public page may show: announcements that have aired there, nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core import regions
from core.clock import utcnow
from scheduler.models import Broadcast, BroadcastStatus, Occurrence, OccurrenceStatus
from tts.models import AudioAsset

# How far back the page reaches, and how many announcements it lists at most.
PUBLIC_DAYS = 90
PUBLIC_MAX_ITEMS = 30
# An occurrence that was sent to the speakers and whose start has come has aired.
_AIRED = (OccurrenceStatus.dispatched, OccurrenceStatus.done)


@dataclass(frozen=True)
class Aired:
    """One announcement as villagers may see it: no author, comments, devices or figures."""

    title: str
    text: str | None
    aired_at: datetime
    audio_sha256: str | None


def aired_in(*, session: Session, village_code: str, now: datetime | None = None) -> list[Aired]:
    """Announcements that aired on this area's speakers in the last PUBLIC_DAYS, newest first.

    Cancelled broadcasts are left out even if part of them played: a cancellation is usually a
    correction, and the page must not keep repeating a withdrawn notice.
    """
    now = now or utcnow()
    chain = regions.chain(village_code)
    last_airing = func.max(Occurrence.start_at).label("aired_at")
    rows = session.execute(
        select(Broadcast, last_airing)
        .join(Occurrence, Occurrence.broadcast_id == Broadcast.id)
        .where(
            Broadcast.scope_code.in_(chain),
            Broadcast.status != BroadcastStatus.cancelled,
            Occurrence.status.in_(_AIRED),
            Occurrence.start_at <= now,
            Occurrence.start_at >= now - timedelta(days=PUBLIC_DAYS),
        )
        .group_by(Broadcast.id)
        .order_by(last_airing.desc())
    ).all()
    # The scope holds every target; the village itself must be one of them (or lie under one).
    chosen = [
        (b, at) for b, at in rows if any(regions.is_under(village_code, t) for t in (b.target_areas or []))
    ][:PUBLIC_MAX_ITEMS]
    assets = {
        a.id: a.sha256
        for a in session.scalars(
            select(AudioAsset).where(AudioAsset.id.in_({b.asset_id for b, _ in chosen if b.asset_id}))
        ).all()
    }
    return [Aired(b.title, b.text, at, assets.get(b.asset_id)) for b, at in chosen]
