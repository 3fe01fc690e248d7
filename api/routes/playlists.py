"""Playlists (programmes of notices and recordings) and uploaded recordings."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Response, UploadFile, status

from api.deps import CurrentUser, SessionDep, SettingsDep, require_roles
from api.routes.common import AUTHED, BAD_BODY, CONFLICT, TOO_LARGE, UNAVAILABLE, Id, Limit, Offset, Page
from api.uploads import staged_upload
from core.models import Role, User
from playlists import flows as playlist_flows
from playlists import service as playlist_service
from playlists.schemas import AssetRead, PlaylistCreate, PlaylistRead, PlaylistUpdate
from scheduler import audit
from scheduler.lifecycle import PLAYLIST_BROADCASTS
from tts import store

router = APIRouter(prefix="/api/v1/playlists", tags=["playlists"], responses=AUTHED)

Author = Annotated[User, Depends(require_roles(Role.staff, Role.approver))]


def _asset_read(settings, asset) -> AssetRead:
    return AssetRead.model_validate(asset).model_copy(
        update={"url": store.media_url(settings.public_url, asset.sha256)}
    )


@router.post("", status_code=status.HTTP_201_CREATED, responses=BAD_BODY)
def create_playlist(body: PlaylistCreate, session: SessionDep, user: Author) -> PlaylistRead:
    """A new playlist in your area."""
    playlist = playlist_flows.create(session=session, user=user, playlist_in=body, audit=audit.record)
    return PlaylistRead.model_validate(playlist)


@router.get("")
def list_playlists(
    session: SessionDep, user: CurrentUser, limit: Limit = 50, offset: Offset = 0
) -> Page[PlaylistRead]:
    """Playlists of your area, newest first."""
    items, total = playlist_service.list_playlists(session=session, user=user, limit=limit, offset=offset)
    return Page(items=[PlaylistRead.model_validate(p) for p in items], total=total)


@router.get("/{playlist_id}")
def get_playlist(playlist_id: Id, session: SessionDep, user: CurrentUser) -> PlaylistRead:
    """One playlist with its items in order."""
    playlist = playlist_flows.load(session=session, user=user, playlist_id=playlist_id)
    return PlaylistRead.model_validate(playlist)


@router.patch("/{playlist_id}", responses=BAD_BODY)
def update_playlist(playlist_id: Id, body: PlaylistUpdate, session: SessionDep, user: Author) -> PlaylistRead:
    """Change name, items, repeat or gap. Broadcasts already submitted keep the audio they were
    approved with; new submissions use the new version."""
    playlist = playlist_flows.update(
        session=session, user=user, playlist_id=playlist_id, playlist_in=body, audit=audit.record
    )
    return PlaylistRead.model_validate(playlist)


@router.delete("/{playlist_id}", status_code=status.HTTP_204_NO_CONTENT, responses=CONFLICT)
def delete_playlist(playlist_id: Id, session: SessionDep, user: Author) -> Response:
    """Delete a playlist that no open broadcast uses."""
    playlist_flows.delete(
        session=session, user=user, playlist_id=playlist_id, broadcasts=PLAYLIST_BROADCASTS,
        audit=audit.record,
    )  # fmt: skip
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{playlist_id}/preview", responses=UNAVAILABLE)
def preview(playlist_id: Id, session: SessionDep, settings: SettingsDep, user: Author) -> AssetRead:
    """Assemble the playlist now and return the file to listen to (cached by content)."""
    asset = playlist_flows.preview(session=session, settings=settings, user=user, playlist_id=playlist_id)
    return _asset_read(settings, asset)


@router.post(
    "/audio", status_code=status.HTTP_201_CREATED, responses={**BAD_BODY, **TOO_LARGE, **UNAVAILABLE}
)
def upload_audio(
    file: Annotated[UploadFile, File(description="A recording ffmpeg can read (mp3, wav, m4a, ...).")],
    session: SessionDep,
    settings: SettingsDep,
    user: Author,
) -> AssetRead:
    """Upload a recording for `audio` items; it is re-encoded to the speakers' MP3 format."""
    with staged_upload(file, settings) as staged:
        asset = playlist_flows.upload_audio(
            session=session, settings=settings, user=user, path=staged, filename=file.filename or "",
            audit=audit.record,
        )  # fmt: skip
    return _asset_read(settings, asset)
