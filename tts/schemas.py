"""Request and response shapes of the speech API."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_serializer, model_validator

from tts import audio
from tts.base import PITCH_MAX, PITCH_MIN, RATE_MAX, RATE_MIN

_PERCENT = re.compile(r"[+-]\d{1,3}%")
_HERTZ = re.compile(r"[+-]\d{1,3}Hz")


def _signed(pattern: re.Pattern[str], unit: str, low: int, high: int, example: str):
    """A validator turning ``"-20%"`` / ``"+5Hz"`` into an int, refusing anything else by name."""

    def parse(value: object) -> int:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ValueError(f"write it as a sign, a number and {unit}, e.g. {example!r}; got {value!r}")
        number = int(value[: -len(unit)])
        if not low <= number <= high:
            raise ValueError(f"must be from {low:+d}{unit} to {high:+d}{unit}; got {value!r}")
        return number

    return BeforeValidator(parse)


Rate = Annotated[
    int,
    _signed(_PERCENT, "%", RATE_MIN, RATE_MAX, "-20%"),
    Field(description='Speaking rate relative to normal, e.g. "-20%" (slower, for older listeners).'),
]
Volume = Annotated[
    int,
    _signed(_PERCENT, "%", -50, 100, "+10%"),
    Field(description='Loudness relative to the configured target, e.g. "+10%" or "-20%".'),
]
Pitch = Annotated[
    int,
    _signed(_HERTZ, "Hz", PITCH_MIN, PITCH_MAX, "+5Hz"),
    Field(description='Pitch offset, e.g. "+5Hz".'),
]


class SpeechSettings(BaseModel):
    """How a notice is spoken and framed: the one shape of preview, broadcasts with `text` and
    playlist text items. Same text and same settings give the same cache key, so the same asset."""

    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True)

    voice: str | None = Field(
        default=None, max_length=64, description="Voice id from GET /api/v1/voices; absent: the default."
    )
    rate: Rate = "+0%"  # type: ignore[assignment]
    volume: Volume = "+0%"  # type: ignore[assignment]
    pitch: Pitch = "+0Hz"  # type: ignore[assignment]
    repeat: int = Field(default=1, ge=1, le=audio.MAX_REPEAT, description="How many times it is read.")
    chime: bool = Field(default=False, description="A two-tone chime before the speech.")
    closing_chime: bool = Field(default=False, description="The chime again after the last reading.")

    @field_serializer("rate", "volume")
    def _percent(self, value: int) -> str:
        return f"{value:+d}%"

    @field_serializer("pitch")
    def _hertz(self, value: int) -> str:
        return f"{value:+d}Hz"

    @classmethod
    def of(
        cls,
        *,
        voice: str | None = None,
        rate: int = 0,
        volume: int = 0,
        pitch: int = 0,
        repeat: int = 1,
        chime: bool = False,
        closing_chime: bool = False,
    ) -> SpeechSettings:
        """Settings from stored numbers (rate and volume in percent, pitch in Hz)."""
        return cls(
            voice=voice, rate=f"{rate:+d}%", volume=f"{volume:+d}%", pitch=f"{pitch:+d}Hz",  # type: ignore[arg-type]
            repeat=repeat, chime=chime, closing_chime=closing_chime,
        )  # fmt: skip

    def options(self) -> dict[str, Any]:
        """Keyword arguments of `tts.service.synthesize` (numbers, not the "-20%" strings)."""
        return {name: getattr(self, name) for name in type(self).model_fields}


def fold_speech(data: object, keys: Collection[str], *, integer_percent: bool = False) -> object:
    """Move speech settings given beside the other fields (older request shapes) into `speech`.

    For a `model_validator(mode="before")`. With ``integer_percent`` an integer `rate` (the older
    broadcast and playlist form) is read as percent: ``-20`` means ``"-20%"``.
    """
    if not isinstance(data, dict):
        return data
    flat = [key for key in keys if key in data]
    if not flat:
        return data
    if data.get("speech") is not None:
        names = ", ".join(f"`{key}`" for key in flat)
        raise ValueError(f"give {names} inside `speech`, not beside it")
    moved = {key: data[key] for key in flat}
    rate = moved.get("rate")
    if integer_percent and isinstance(rate, int) and not isinstance(rate, bool):
        moved["rate"] = f"{rate:+d}%"
    rest = {key: value for key, value in data.items() if key not in moved and key != "speech"}
    return rest | {"speech": moved}


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="The notice; numbers, dates and phone numbers are read as spoken.")
    speech: SpeechSettings = Field(
        default_factory=SpeechSettings, description="Voice, rate, volume, pitch, repeat and chimes."
    )

    @model_validator(mode="before")
    @classmethod
    def _flat_settings(cls, data: object) -> object:
        # The first preview clients sent the settings beside `text`; they still may.
        return fold_speech(data, SpeechSettings.model_fields)


class AssetRead(BaseModel):
    asset_id: int
    url: str = Field(description="Where the MP3 is served: /media/<sha256>.mp3")
    sha256: str
    duration_ms: int
    size_bytes: int
    engine: str = Field(description="The engine that produced the audio (or `upload`).")
    voice: str
    requested_engine: str | None
    fallback_reason: str | None = Field(description="Why the engines before it were not used (this request).")
    cached: bool


class VoiceRead(BaseModel):
    id: str
    engine: str
    locale: str
    gender: str
    dialect: str = Field(description="Dialect label: 普通话, 东北话, 陕西话, 粤语, 台湾普通话 ...")
    name: str
    available: bool = Field(description="Whether its engine can be used right now.")
