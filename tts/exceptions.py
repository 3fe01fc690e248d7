"""Errors of the speech stage, on the project's error family (`core.errors`).

    EngineError (Unavailable)       an engine is missing, misconfigured or failed
    └── SynthesisFailed             every engine of the chain failed; `reasons` per engine
    SpeechInputError (InvalidInput) a speech setting cannot be served: field ``speech.<setting>``

`tts.text.TextError` (InvalidInput, field ``text``) and `tts.audio.AudioError` (Unavailable) /
`tts.audio.NotAudio` (InvalidInput, field ``file``) live beside the code that raises them.
No bare ValueError leaves the speech stage for a bad request: callers catch the family.
"""

from __future__ import annotations

from core.errors import InvalidInput, Unavailable


class EngineError(Unavailable):
    """An engine is missing, misconfigured or failed; the message says which and why."""


class SpeechInputError(InvalidInput):
    """A speech setting the stage cannot serve as asked (unknown voice, rate out of range, ...).

    ``setting`` is its name inside `tts.schemas.SpeechSettings` (``voice``, ``rate``, ...);
    ``field`` the path where requests carry it, ``speech.<setting>``.
    """

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"speech.{setting}", message)
        self.setting = setting


class SynthesisFailed(EngineError):
    """Every engine of the chain failed; ``reasons`` holds (engine, why) for each, in order."""

    def __init__(self, reasons: list[tuple[str, str]]) -> None:
        self.reasons = reasons
        detail = "; ".join(f"{engine}: {why}" for engine, why in reasons) or "no engine configured"
        super().__init__(f"speech synthesis failed, every engine tried: {detail}")
