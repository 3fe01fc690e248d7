"""Audio assets: synthesised or uploaded audio, stored by content hash."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.clock import utcnow
from core.db import Base, UTCDateTime


class AudioAsset(Base):
    __tablename__ = "audio_assets"

    id: Mapped[int] = mapped_column(primary_key=True)
    # What was asked for: same text, engine, voice and settings -> same key -> same asset.
    cache_key: Mapped[str] = mapped_column(String(64), unique=True)
    # What came out: the file is stored as audio/<sha256[:2]>/<sha256>.mp3
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    duration_ms: Mapped[int] = mapped_column(Integer)
    mime_type: Mapped[str] = mapped_column(String(32), default="audio/mpeg")
    # The engine and voice that produced the audio ("upload" for a recording) ...
    engine: Mapped[str] = mapped_column(String(32))
    voice: Mapped[str] = mapped_column(String(64))
    # ... and the engine that was asked for, with why it did not produce it (None: it did).
    requested_engine: Mapped[str | None] = mapped_column(String(32))
    fallback_reason: Mapped[str | None] = mapped_column(Text)
    # Prosody asked for: rate and volume in percent (-20 = 20 % slower/quieter), pitch in Hz.
    rate: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    volume: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    pitch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    text: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AssetArea(Base):
    """An area whose users may air an asset by its id (a broadcast's `asset_id`, a playlist's audio
    item): the area of each bound user a flow handed the asset to (made, uploaded or previewed).

    Assets are shared by content (the same text and settings, the same file), so one asset can
    belong to several areas; an asset with no row here (made by unbound users, or before these
    rows existed) is usable by unbound users only. Unbound users may use every asset.
    """

    __tablename__ = "audio_asset_areas"

    asset_id: Mapped[int] = mapped_column(ForeignKey("audio_assets.id", ondelete="CASCADE"), primary_key=True)
    area_code: Mapped[str] = mapped_column(String(12), primary_key=True)
