"""Speech: the voice catalogue, previews, and recorded announcements."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile, status

from api.deps import CurrentUser, SessionDep, SettingsDep, require_roles
from api.routes.common import AUTHED, BAD_BODY, TOO_LARGE, UNAVAILABLE
from api.uploads import staged_upload
from core.models import Role, User
from tts import audio, store, voices
from tts import flows as tts_flows
from tts import service as tts_service
from tts.schemas import AssetRead, PreviewRequest, VoiceRead, Volume

router = APIRouter(tags=["speech"], responses=AUTHED)

Author = Annotated[User, Depends(require_roles(Role.staff, Role.approver))]


def _read(result: tts_service.SynthesisResult) -> AssetRead:
    asset = result.asset
    return AssetRead(
        asset_id=asset.id,
        url=store.media_path(asset.sha256),
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


@router.post("/api/v1/tts/preview", responses={**BAD_BODY, **UNAVAILABLE})
def preview(body: PreviewRequest, session: SessionDep, settings: SettingsDep, user: Author) -> AssetRead:
    """Speak a notice (or return the identical one made before) and say which engine made it.

    `speech` is the same settings object broadcasts and playlist text items take: a broadcast of
    the same text with the same settings airs this asset. The settings may also stand beside
    `text` (the older form)."""
    result = tts_flows.preview(
        session=session, settings=settings, user=user, text=body.text, speech=body.speech
    )
    return _read(result)


@router.post(
    "/api/v1/tts/upload",
    status_code=status.HTTP_201_CREATED,
    responses={**BAD_BODY, **TOO_LARGE, **UNAVAILABLE},
)
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
    with staged_upload(file, settings) as staged:
        result = tts_flows.upload(
            session=session,
            settings=settings,
            user=user,
            path=staged,
            title=title or (file.filename or "").rsplit(".", 1)[0],
            volume=volume if isinstance(volume, int) else 0,
            repeat=repeat,
            chime=chime,
            closing_chime=closing_chime,
        )
    return _read(result)
