"""Request and response shapes of the playlist API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from playlists.models import ItemKind, PlaylistItem
from tts.schemas import SpeechSettings, fold_speech

MAX_ITEMS = 50
MAX_REPEAT = 10
MAX_GAP_MS = 60_000


class ItemIn(BaseModel):
    """A spoken notice (`text`, with `speech` settings) or an audio asset already stored (`asset_id`)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["text", "audio"]
    text: str | None = Field(default=None, max_length=20_000, description="For kind=text: the notice.")
    speech: SpeechSettings | None = Field(
        default=None,
        description="For kind=text: voice, rate, volume, pitch, repeat and chimes, as POST /tts/preview "
        "takes them (the same settings make the same asset). Absent: the defaults.",
    )
    asset_id: int | None = Field(default=None, ge=1, description="For kind=audio: an audio asset id.")

    @model_validator(mode="before")
    @classmethod
    def _older_speech_fields(cls, data: object) -> object:
        # The first playlist API took `voice` and an integer `rate` (percent) on the item.
        return fold_speech(data, ("voice", "rate"), integer_percent=True)

    @model_validator(mode="after")
    def _one_source(self) -> ItemIn:
        if self.kind == "text":
            if not (self.text or "").strip():
                raise ValueError("a text item needs non-empty `text`")
            if self.asset_id is not None:
                raise ValueError("a text item has no `asset_id`")
        else:
            if self.asset_id is None:
                raise ValueError("an audio item needs `asset_id`")
            if self.text is not None or self.speech is not None:
                raise ValueError("an audio item has no `text` or `speech`: it plays as it is")
        return self

    @property
    def speech_settings(self) -> SpeechSettings:
        """The item's speech settings, defaults filled in."""
        return self.speech or SpeechSettings()


class PlaylistCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    items: list[ItemIn] = Field(min_length=1, max_length=MAX_ITEMS)
    repeat: int = Field(default=1, ge=1, le=MAX_REPEAT, description="Times the whole list plays per airing.")
    gap_ms: int = Field(default=1000, ge=0, le=MAX_GAP_MS, description="Silence between items and rounds.")


class PlaylistUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    items: list[ItemIn] | None = Field(default=None, min_length=1, max_length=MAX_ITEMS)
    repeat: int | None = Field(default=None, ge=1, le=MAX_REPEAT)
    gap_ms: int | None = Field(default=None, ge=0, le=MAX_GAP_MS)


class ItemRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    position: int
    kind: str
    text: str | None
    speech: SpeechSettings | None = Field(description="For text items; null for audio items.")
    asset_id: int | None

    @model_validator(mode="before")
    @classmethod
    def _from_row(cls, data: object) -> object:
        if not isinstance(data, PlaylistItem):
            return data
        speech = None
        if data.kind == ItemKind.text:
            speech = SpeechSettings.of(
                voice=data.voice, rate=data.rate, volume=data.volume, pitch=data.pitch, repeat=data.repeat,
                chime=data.chime, closing_chime=data.closing_chime,
            )  # fmt: skip
        return {
            "position": data.position, "kind": data.kind, "text": data.text, "speech": speech,
            "asset_id": data.asset_id,
        }  # fmt: skip


class PlaylistRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    repeat: int
    gap_ms: int
    area_code: str | None
    revision: int
    created_by: int | None
    created_at: datetime
    updated_at: datetime
    items: list[ItemRead]


class AssetRead(BaseModel):
    """An assembled or uploaded audio file, with where to fetch it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    sha256: str
    size_bytes: int
    duration_ms: int
    engine: str
    url: str = ""
