"""Speech: the voice catalogue, previews, and recorded announcements."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile, status

from api.deps import CurrentUser, SessionDep, SettingsDep, require_roles
from core.models import Role, User
from tts import audio, store, voices
from tts import service as tts_service
from tts.engines import EngineError
from tts.exceptions import SpeechInputError, SynthesisFailed
from tts.schemas import AssetRead, PreviewRequest, VoiceRead, Volume
from tts.text import TextError

router = APIRouter(tags=["speech"])

Author = Annotated[User, Depends(require_roles(Role.staff, Role.approver))]
UPLOAD_CHUNK = 1 << 20


def _field_error(field: str, message: str) -> HTTPException:
    return HTTPException(
        status_code=422, detail=[{"loc": ["body", *field.split(".")], "msg": message, "type": "value_error"}]
    )


def _read(result: tts_service.SynthesisResult) -> AssetRead:
    asset = result.asset
    return AssetRead(
        asset_id=asset.id,
        url=f"/media/{asset.sha256}.mp3",
        sha256=asset.sha256,
        duration_ms=asset.duration_ms,
        size_bytes=asset.size_bytes,
        engine=asset.engine,
        voice=asset.voice,
        requested_engine=asset.requested_engine,
        fallback_reason=result.fallback_reason,
        cached=result.cached,
    )


@router.get("/api/v1/voices")
def list_voices(settings: SettingsDep, user: CurrentUser) -> list[VoiceRead]:
    """Voices by engine and dialect, and whether each can be used now (edge needs the internet)."""
    found = asyncio.run(voices.catalogue(settings=settings))
    return [VoiceRead.model_validate(v, from_attributes=True) for v in found]


@router.post("/api/v1/tts/preview")
def preview(body: PreviewRequest, session: SessionDep, settings: SettingsDep, user: Author) -> AssetRead:
    """Speak a notice (or return the identical one made before) and say which engine made it.

    `speech` is the same settings object broadcasts and playlist text items take: a broadcast of
    the same text with the same settings airs this asset. The settings may also stand beside
    `text` (the older form)."""
    try:
        result = tts_service.synthesize_sync(
            session=session,
            settings=settings,
            text=body.text,
            **body.speech.options(),
        )
    except TextError as exc:
        raise _field_error(exc.field, str(exc)) from None
    except SpeechInputError as exc:  # a voice the catalogue does not know
        raise _field_error(f"speech.{exc.field}", str(exc)) from None
    except SynthesisFailed as exc:
        raise HTTPException(
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            detail={"msg": str(exc), "reasons": [{"engine": e, "reason": r} for e, r in exc.reasons]},
        ) from None
    except (EngineError, audio.AudioError) as exc:
        raise HTTPException(status_code=503, detail=f"speech synthesis failed: {exc}") from None
    return _read(result)


@router.post("/api/v1/tts/upload", status_code=status.HTTP_201_CREATED)
def upload(
    file: Annotated[UploadFile, File(description="A recorded announcement: MP3, WAV or M4A.")],
    session: SessionDep,
    settings: SettingsDep,
    user: Author,
    title: Annotated[str, Form(max_length=200, description="ID3 title; default: the file name.")] = "",
    volume: Annotated[Volume, Form()] = "+0%",  # type: ignore[assignment]
    repeat: Annotated[int, Form(ge=1, le=audio.MAX_REPEAT)] = 1,
    chime: Annotated[bool, Form()] = False,
    closing_chime: Annotated[bool, Form()] = False,
) -> AssetRead:
    """Store a recording as an asset, normalised like synthesised speech; 422 if it is not audio."""
    limit = settings.audio.max_upload_mb * 1024 * 1024
    with store.staging(settings.audio_dir, suffix=".upload") as staged:
        size = 0
        with open(staged, "wb") as out:
            while chunk := file.file.read(UPLOAD_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise HTTPException(
                        status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                        detail=f"file is larger than {settings.audio.max_upload_mb} MB",
                    )
                out.write(chunk)
        try:
            result = tts_service.store_recording_sync(
                session=session,
                settings=settings,
                path=staged,
                title=title or (file.filename or "").rsplit(".", 1)[0],
                volume=volume if isinstance(volume, int) else 0,
                repeat=repeat,
                chime=chime,
                closing_chime=closing_chime,
            )
        except audio.NotAudio as exc:
            raise _field_error("file", str(exc)) from None
        except SpeechInputError as exc:
            raise _field_error(exc.field, str(exc)) from None
        except audio.AudioError as exc:
            raise HTTPException(status_code=503, detail=f"audio processing failed: {exc}") from None
    return _read(result)
