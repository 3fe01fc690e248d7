"""Errors of the speech stage that callers map to answers (422 naming a field, 503 with reasons)."""

from __future__ import annotations

from tts.engines import EngineError


class SpeechInputError(ValueError):
    """A request the speech stage cannot serve as asked; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class SynthesisFailed(EngineError):
    """Every engine of the chain failed; ``reasons`` holds (engine, why) for each, in order."""

    def __init__(self, reasons: list[tuple[str, str]]) -> None:
        self.reasons = reasons
        detail = "; ".join(f"{engine}: {why}" for engine, why in reasons) or "no engine configured"
        super().__init__(f"speech synthesis failed, every engine tried: {detail}")
