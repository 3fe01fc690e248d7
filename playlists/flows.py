"""Playlist use cases: check who asks and where, call the verbs of `playlists.service`, commit.

Every door calls one of these; none commits by itself. Two things a playlist use case needs live
in a layer above playlists (scheduler/), which playlists may not import, so the caller passes
them in: `audit` (the audit log's ``record``) and, to delete, `Broadcasts` (which broadcasts use
a playlist).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.orm import Session

from core.errors import Conflict, Forbidden
from core.models import User
from core.settings import Settings
from playlists import service as playlist_service
from playlists.models import Playlist
from playlists.schemas import ItemIn, PlaylistCreate, PlaylistUpdate
from tts import flows as tts_flows
from tts import service as tts_service
from tts.models import AudioAsset

OBJECT_TYPE = "playlist"  # in the audit log


class Audit(Protocol):
    """The audit log's ``record`` (`scheduler.audit.record`): one entry, flushed with the change."""

    def __call__(
        self, *, session: Session, user: User | None, action: str, object_type: str, object_id: int | str,
        detail: dict | None = None,
    ) -> Any: ...  # fmt: skip


class Broadcasts(Protocol):
    """What deleting a playlist must know of the broadcasts that use it (scheduler/ provides it)."""

    def open_users(self, *, session: Session, playlist_id: int) -> list[int]:
        """Ids of the broadcasts not yet finished that air this playlist."""
        ...

    def release(self, *, session: Session, playlist_id: int) -> None:
        """Let finished broadcasts forget the playlist (they keep the audio they aired)."""
        ...


def load(*, session: Session, user: User, playlist_id: int) -> Playlist:
    """The playlist if the user may see it: PlaylistNotFound, or Forbidden outside the user's area."""
    playlist = playlist_service.get(session=session, playlist_id=playlist_id)
    if playlist is None:
        raise playlist_service.PlaylistNotFound(playlist_id)
    if not playlist_service.visible_to(user=user, playlist=playlist):
        raise Forbidden(
            f"playlist {playlist_id} belongs to area {playlist.area_code or 'county-wide'}, "
            f"outside your area {user.area_code}",
            reason="area",
        )
    return playlist


def _require_own_assets(*, session: Session, user: User, items: Sequence[ItemIn]) -> None:
    """Forbidden (reason "area") when an item names an audio asset not handed to the user's area."""
    for position, item in enumerate(items):
        if item.asset_id is None:
            continue
        asset = tts_service.get_asset(session=session, asset_id=item.asset_id)
        if asset is not None and not tts_service.usable_by(session=session, asset=asset, user=user):
            raise Forbidden(
                f"items.{position}: audio asset {item.asset_id} belongs to another area", reason="area"
            )


def create(*, session: Session, user: User, playlist_in: PlaylistCreate, audit: Audit) -> Playlist:
    """A new playlist in the user's area, audited and committed."""
    tts_flows.require_author(user)
    _require_own_assets(session=session, user=user, items=playlist_in.items)
    playlist = playlist_service.create(
        session=session, user=user, name=playlist_in.name, items=playlist_in.items,
        repeat=playlist_in.repeat, gap_ms=playlist_in.gap_ms,
    )  # fmt: skip
    audit(session=session, user=user, action="created", object_type=OBJECT_TYPE, object_id=playlist.id)
    session.commit()
    return playlist


def update(
    *, session: Session, user: User, playlist_id: int, playlist_in: PlaylistUpdate, audit: Audit
) -> Playlist:
    """Change name, items, repeat or gap (a new revision), audited and committed.

    Broadcasts already submitted keep the audio they were approved with.
    """
    tts_flows.require_author(user)
    playlist = load(session=session, user=user, playlist_id=playlist_id)
    if playlist_in.items is not None:
        _require_own_assets(session=session, user=user, items=playlist_in.items)
    playlist_service.update(
        session=session, playlist=playlist, name=playlist_in.name, items=playlist_in.items,
        repeat=playlist_in.repeat, gap_ms=playlist_in.gap_ms,
    )  # fmt: skip
    audit(
        session=session, user=user, action="updated", object_type=OBJECT_TYPE, object_id=playlist.id,
        detail={"revision": playlist.revision},
    )  # fmt: skip
    session.commit()
    return playlist


def delete(*, session: Session, user: User, playlist_id: int, broadcasts: Broadcasts, audit: Audit) -> None:
    """Delete a playlist that no open broadcast uses (Conflict otherwise), audited and committed."""
    tts_flows.require_author(user)
    playlist = load(session=session, user=user, playlist_id=playlist_id)
    users_of = broadcasts.open_users(session=session, playlist_id=playlist.id)
    if users_of:
        raise Conflict(
            f"used by open broadcast(s) {', '.join(map(str, users_of))}; cancel them first", reason="in_use"
        )
    broadcasts.release(session=session, playlist_id=playlist.id)
    playlist_service.delete(session=session, playlist=playlist)
    audit(session=session, user=user, action="deleted", object_type=OBJECT_TYPE, object_id=playlist_id)
    session.commit()


def preview(*, session: Session, settings: Settings, user: User, playlist_id: int) -> AudioAsset:
    """The playlist assembled into one asset to listen to (cached by content), committed."""
    tts_flows.require_author(user)
    playlist = load(session=session, user=user, playlist_id=playlist_id)
    asset = playlist_service.assemble(session=session, settings=settings, playlist=playlist)
    tts_service.grant(session=session, asset=asset, user=user)
    session.commit()
    return asset


def upload_audio(
    *, session: Session, settings: Settings, user: User, path: Path, filename: str, audit: Audit
) -> AudioAsset:
    """Store an uploaded recording for `audio` items (re-encoded as the speakers play), audited, committed."""
    tts_flows.require_author(user)
    asset = playlist_service.store_upload(session=session, settings=settings, path=path, filename=filename)
    tts_service.grant(session=session, asset=asset, user=user)
    audit(session=session, user=user, action="uploaded", object_type="audio_asset", object_id=asset.id)
    session.commit()
    return asset
