"""Playlists (programmes of notices and recordings) and uploaded recordings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, HTTPException, Response, UploadFile, status
from sqlalchemy import select

from api.deps import CurrentUser, SessionDep, SettingsDep, require_roles
from api.routes.common import Limit, Offset, Page
from core.models import Role, User
from playlists import service as playlist_service
from playlists.models import Playlist
from playlists.schemas import AssetRead, PlaylistCreate, PlaylistRead, PlaylistUpdate
from scheduler import audit
from scheduler.models import OPEN_STATUSES, Broadcast

router = APIRouter(prefix="/api/v1/playlists", tags=["playlists"])

Author = Annotated[User, Depends(require_roles(Role.staff, Role.approver))]


def _load(session, playlist_id: int, user: User) -> Playlist:
    """The playlist (404 if unknown) if the user may see it (403 otherwise)."""
    playlist = playlist_service.get(session=session, playlist_id=playlist_id)
    if playlist is None:
        raise HTTPException(status_code=404, detail=f"no playlist {playlist_id}")
    if not playlist_service.visible_to(user=user, playlist=playlist):
        raise HTTPException(
            status_code=403,
            detail=f"playlist {playlist_id} belongs to area {playlist.area_code or 'county-wide'}, "
            f"outside your area {user.area_code}",
        )
    return playlist


def _asset_read(settings, asset) -> AssetRead:
    return AssetRead.model_validate(asset).model_copy(
        update={"url": f"{settings.public_url.rstrip('/')}/media/{asset.sha256}.mp3"}
    )


@router.post("", status_code=status.HTTP_201_CREATED)
def create_playlist(body: PlaylistCreate, session: SessionDep, user: Author) -> PlaylistRead:
    """A new playlist in your area."""
    playlist = (
        playlist_service.create(
            session=session,
            user=user,
            name=body.name,
            items=body.items,
            repeat=body.repeat,
            gap_ms=body.gap_ms,
        )
    )
    audit.record(session=session, user=user, action="created", object_type="playlist", object_id=playlist.id)
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
    return PlaylistRead.model_validate(_load(session, playlist_id, user))


@router.patch("/{playlist_id}")
def update_playlist(
    playlist_id: int, body: PlaylistUpdate, session: SessionDep, user: Author
) -> PlaylistRead:
    """Change name, items, repeat or gap. Broadcasts already submitted keep the audio they were
    approved with; new submissions use the new version."""
    playlist = _load(session, playlist_id, user)
    (
        playlist_service.update(
            session=session,
            playlist=playlist,
            name=body.name,
            items=body.items,
            repeat=body.repeat,
            gap_ms=body.gap_ms,
        )  # fmt: skip
    )
    audit.record(
        session=session, user=user, action="updated", object_type="playlist", object_id=playlist.id,
        detail={"revision": playlist.revision},
    )  # fmt: skip
    return PlaylistRead.model_validate(playlist)


@router.delete("/{playlist_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_playlist(playlist_id: int, session: SessionDep, user: Author) -> Response:
    """Delete a playlist that no open broadcast uses."""
    playlist = _load(session, playlist_id, user)
    users_of = session.scalars(
        select(Broadcast.id).where(Broadcast.playlist_id == playlist.id, Broadcast.status.in_(OPEN_STATUSES))
    ).all()
    if users_of:
        raise HTTPException(
            status_code=409,
            detail=f"used by open broadcast(s) {', '.join(map(str, users_of))}; cancel them first",
        )
    session.execute(
        Broadcast.__table__.update().where(Broadcast.playlist_id == playlist.id).values(playlist_id=None)
    )
    playlist_service.delete(session=session, playlist=playlist)
    audit.record(session=session, user=user, action="deleted", object_type="playlist", object_id=playlist_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{playlist_id}/preview")
def preview(playlist_id: int, session: SessionDep, settings: SettingsDep, user: Author) -> AssetRead:
    """Assemble the playlist now and return the file to listen to (cached by content)."""
    playlist = _load(session, playlist_id, user)
    asset = (playlist_service.assemble(session=session, settings=settings, playlist=playlist))
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
    asset = (
        playlist_service.store_upload(
            session=session, settings=settings, data=data, filename=file.filename or ""
        )
    )
    audit.record(session=session, user=user, action="uploaded", object_type="audio_asset", object_id=asset.id)
    return _asset_read(settings, asset)
