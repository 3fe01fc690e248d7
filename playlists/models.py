"""Playlists: an ordered programme of spoken notices and recorded audio, played as one file."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, Enum, ForeignKey, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.clock import utcnow
from core.db import Base, UTCDateTime


class ItemKind(enum.StrEnum):
    text = "text"  # a notice read out by the speech engine
    audio = "audio"  # an audio asset already in the store (uploaded or synthesised)


class Playlist(Base):
    __tablename__ = "playlists"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # How often the whole list is played in one airing, and the silence between items and rounds.
    repeat: Mapped[int] = mapped_column(Integer, default=1)
    gap_ms: Mapped[int] = mapped_column(Integer, default=1000)
    # The area of the user who made it: users see playlists of their own area and below.
    area_code: Mapped[str | None] = mapped_column(ForeignKey("regions.code"))
    # Bumped on every edit; a broadcast records the revision it was assembled from.
    revision: Mapped[int] = mapped_column(Integer, default=1)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    items: Mapped[list[PlaylistItem]] = relationship(
        back_populates="playlist",
        order_by="PlaylistItem.position",
        cascade="all, delete-orphan",
    )


class PlaylistItem(Base):
    __tablename__ = "playlist_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    playlist_id: Mapped[int] = mapped_column(ForeignKey("playlists.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[ItemKind] = mapped_column(Enum(ItemKind, native_enum=False, length=8))
    text: Mapped[str | None] = mapped_column(Text)
    # A text item's speech settings (tts.schemas.SpeechSettings): the same as a preview's, so the
    # same text and settings give the same asset.
    voice: Mapped[str | None] = mapped_column(String(64))
    rate: Mapped[int] = mapped_column(Integer, default=0)  # speech rate in percent, -50..+100
    volume: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # loudness, percent
    pitch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # Hz
    repeat: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # readings of this item
    chime: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    closing_chime: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    asset_id: Mapped[int | None] = mapped_column(ForeignKey("audio_assets.id"))

    playlist: Mapped[Playlist] = relationship(back_populates="items")
