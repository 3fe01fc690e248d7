"""Playlists (programmes of notices and recordings) and uploaded recordings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Response, UploadFile, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import CurrentUser, SessionDep, SettingsDep, require_roles
from api.routes.common import Limit, Offset, Page
from api.routes.tts import http_error
from core.errors import CunxiangError
from core.models import Role, User
from playlists import flows as playlist_flows
from playlists import service as playlist_service
from playlists.schemas import AssetRead, PlaylistCreate, PlaylistRead, PlaylistUpdate
from scheduler import audit
from scheduler.models import OPEN_STATUSES, Broadcast
from tts import store

router = APIRouter(prefix="/api/v1/playlists", tags=["playlists"])

Author = Annotated[User, Depends(require_roles(Role.staff, Role.approver))]


class _Broadcasts:
    """`playlists.flows.Broadcasts` over the scheduler's tables (to move into scheduler/)."""

    def open_users(self, *, session: Session, playlist_id: int) -> list[int]:
        query = select(Broadcast.id).where(
            Broadcast.playlist_id == playlist_id, Broadcast.status.in_(OPEN_STATUSES)
        )
        return list(session.scalars(query))

    def release(self, *, session: Session, playlist_id: int) -> None:
        session.execute(
            Broadcast.__table__.update().where(Broadcast.playlist_id == playlist_id).values(playlist_id=None)
        )


BROADCASTS = _Broadcasts()


def _asset_read(settings, asset) -> AssetRead:
    return AssetRead.model_validate(asset).model_copy(
        update={"url": store.media_url(settings.public_url, asset.sha256)}
    )


@router.post("", status_code=status.HTTP_201_CREATED)
def create_playlist(body: PlaylistCreate, session: SessionDep, user: Author) -> PlaylistRead:
    """A new playlist in your area."""
    try:
        playlist = playlist_flows.create(session=session, user=user, playlist_in=body, audit=audit.record)
    except CunxiangError as exc:
        raise http_error(exc) from None
    return PlaylistRead.model_validate(playlist)


@router.get("")
def list_playlists(
    session: SessionDep, user: CurrentUser, limit: Limit = 50, offset: Offset = 0
) -> Page[PlaylistRead]:
    """Playlists of your area, newest first."""
    items, total = playlist_service.list_playlists(session=session, user=user, limit=limit, offset=offset)
    return Page(items=[PlaylistRead.model_validate(p) for p in items], total=total)


@router.get("/{playlist_id}")
def get_playlist(playlist_id: int, session: SessionDep, user: CurrentUser) -> PlaylistRead:
    """One playlist with its items in order."""
    try:
        playlist = playlist_flows.load(session=session, user=user, playlist_id=playlist_id)
    except CunxiangError as exc:
        raise http_error(exc) from None
    return PlaylistRead.model_validate(playlist)


@router.patch("/{playlist_id}")
def update_playlist(
    playlist_id: int, body: PlaylistUpdate, session: SessionDep, user: Author
) -> PlaylistRead:
    """Change name, items, repeat or gap. Broadcasts already submitted keep the audio they were
    approved with; new submissions use the new version."""
    try:
        playlist = playlist_flows.update(
            session=session, user=user, playlist_id=playlist_id, playlist_in=body, audit=audit.record
        )
    except CunxiangError as exc:
        raise http_error(exc) from None
    return PlaylistRead.model_validate(playlist)


@router.delete("/{playlist_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_playlist(playlist_id: int, session: SessionDep, user: Author) -> Response:
    """Delete a playlist that no open broadcast uses."""
    try:
        playlist_flows.delete(
            session=session, user=user, playlist_id=playlist_id, broadcasts=BROADCASTS, audit=audit.record
        )
    except CunxiangError as exc:
        raise http_error(exc) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{playlist_id}/preview")
def preview(playlist_id: int, session: SessionDep, settings: SettingsDep, user: Author) -> AssetRead:
    """Assemble the playlist now and return the file to listen to (cached by content)."""
    try:
        asset = playlist_flows.preview(session=session, settings=settings, user=user, playlist_id=playlist_id)
    except CunxiangError as exc:
        raise http_error(exc) from None
    return _asset_read(settings, asset)


@router.post("/audio", status_code=status.HTTP_201_CREATED)
def upload_audio(
    file: Annotated[UploadFile, File(description="A recording ffmpeg can read (mp3, wav, m4a, ...).")],
    session: SessionDep,
    settings: SettingsDep,
    user: Author,
) -> AssetRead:
    """Upload a recording for `audio` items; it is re-encoded to the speakers' MP3 format."""
    data = file.file.read(playlist_service.MAX_UPLOAD_BYTES + 1)
    try:
        asset = playlist_flows.upload_audio(
            session=session, settings=settings, user=user, data=data, filename=file.filename or "",
            audit=audit.record,
        )  # fmt: skip
    except CunxiangError as exc:
        raise http_error(exc) from None
    return _asset_read(settings, asset)
