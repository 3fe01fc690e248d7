"""Playlist verbs: create, read, edit, delete, and assemble into one audio asset per airing.

Assembly synthesises each text item through `tts.service` with its speech settings (the shape a
preview takes, so a previewed text is not synthesised again), joins the files
(`playlists.audio`) and stores the result in the content-addressed store as an `AudioAsset`
keyed by what went in, so assembling an unchanged playlist twice costs one lookup. The verbs flush
and never commit (`playlists.flows` does); asset rows are recorded as `tts.service` records them,
durable at once (a cache entry is not part of the caller's change).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core import regions
from core.clock import utcnow
from core.errors import InvalidInput, NotFound
from core.models import User
from core.settings import Settings
from playlists import audio
from playlists.models import ItemKind, Playlist, PlaylistItem
from playlists.schemas import ItemIn
from tts import audio as tts_audio
from tts import service as tts_service
from tts import store
from tts.exceptions import SpeechInputError
from tts.models import AudioAsset
from tts.schemas import SpeechSettings

log = logging.getLogger(__name__)

ASSEMBLY_VERSION = 1
PLAYLIST_ENGINE = "playlist"  # AudioAsset.engine of assembled programmes


class PlaylistError(InvalidInput):
    """A playlist request that cannot be accepted; `field` names the offending input."""


class PlaylistNotFound(NotFound):
    """No playlist with this id."""

    def __init__(self, playlist_id: int) -> None:
        super().__init__(f"no playlist {playlist_id}")
        self.playlist_id = playlist_id


def get(*, session: Session, playlist_id: int) -> Playlist | None:
    """Return the playlist with this id, or None."""
    return session.get(Playlist, playlist_id)


def visible_to(*, user: User, playlist: Playlist) -> bool:
    """A user bound to an area sees playlists made inside it (and county-wide ones of nobody's)."""
    if user.area_code is None:
        return True
    return playlist.area_code is not None and regions.is_under(playlist.area_code, user.area_code)


def list_playlists(
    *, session: Session, user: User, limit: int = 50, offset: int = 0
) -> tuple[list[Playlist], int]:
    """Playlists the user may see, newest first, with the total."""
    query = select(Playlist)
    if user.area_code is not None:
        query = query.where(Playlist.area_code.startswith(regions.code_prefix(user.area_code)))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = session.scalars(query.order_by(Playlist.id.desc()).limit(limit).offset(offset)).all()
    return list(items), total


def _items(session: Session, items: Sequence[ItemIn]) -> list[PlaylistItem]:
    ids = {i.asset_id for i in items if i.asset_id is not None}
    known = set(session.scalars(select(AudioAsset.id).where(AudioAsset.id.in_(ids))).all()) if ids else set()
    rows = []
    for position, item in enumerate(items):
        if item.kind == ItemKind.audio and item.asset_id not in known:
            raise PlaylistError(f"items.{position}.asset_id", f"no audio asset {item.asset_id}")
        row = PlaylistItem(
            position=position, kind=ItemKind(item.kind), text=item.text.strip() if item.text else None,
            asset_id=item.asset_id,
        )  # fmt: skip
        if item.kind == ItemKind.text:
            for name, value in item.speech_settings.options().items():
                setattr(row, name, value)  # the columns are named as the settings
        rows.append(row)
    return rows


def speech_of(item: PlaylistItem) -> SpeechSettings:
    """The speech settings of a text item, as a preview of its text would take them."""
    return SpeechSettings.of(
        voice=item.voice, rate=item.rate, volume=item.volume, pitch=item.pitch, repeat=item.repeat,
        chime=item.chime, closing_chime=item.closing_chime,
    )  # fmt: skip


def create(
    *, session: Session, user: User, name: str, items: Sequence[ItemIn], repeat: int = 1, gap_ms: int = 1000
) -> Playlist:
    """Store a new playlist in the user's area."""
    playlist = Playlist(name=name, repeat=repeat, gap_ms=gap_ms, area_code=user.area_code, created_by=user.id)
    playlist.items = _items(session, items)
    session.add(playlist)
    session.flush()
    return playlist


def update(
    *,
    session: Session,
    playlist: Playlist,
    name: str | None = None,
    items: Sequence[ItemIn] | None = None,
    repeat: int | None = None,
    gap_ms: int | None = None,
) -> Playlist:
    """Change a playlist; airings already submitted keep the audio they were approved with."""
    if name is not None:
        playlist.name = name
    if repeat is not None:
        playlist.repeat = repeat
    if gap_ms is not None:
        playlist.gap_ms = gap_ms
    if items is not None:
        new_items = _items(session, items)
        playlist.items.clear()
        session.flush()  # old rows out before new positions go in
        playlist.items.extend(new_items)
    playlist.revision += 1
    playlist.updated_at = utcnow()
    session.flush()
    return playlist


def delete(*, session: Session, playlist: Playlist) -> None:
    """Remove a playlist (the caller checks that no open broadcast uses it)."""
    session.delete(playlist)
    session.flush()


# ---------------------------------------------------------------- audio


def _item_asset(session: Session, settings: Settings, item: PlaylistItem) -> AudioAsset:
    if item.kind == ItemKind.audio:
        asset = tts_service.get_asset(session=session, asset_id=item.asset_id)
        if asset is None:
            raise PlaylistError(f"items.{item.position}.asset_id", f"no audio asset {item.asset_id}")
        return asset
    try:
        result = tts_service.synthesize_sync(
            session=session, settings=settings, text=item.text or "", **speech_of(item).options()
        )
    except SpeechInputError as exc:  # e.g. a voice the catalogue no longer has
        raise PlaylistError(f"items.{item.position}.{exc.field}", exc.message) from None
    return result.asset


def _store_asset(
    session: Session,
    *,
    key: str,
    staged: Path,
    audio_dir: Path,
    engine: str,
    text: str | None,
    repair_id: int | None,
) -> AudioAsset:
    """Move a staged MP3 into the store and record it under `key` (an existing row wins a race)."""
    ms = audio.duration_ms(staged)
    stored = store.put(audio_dir, staged)
    asset = AudioAsset(
        cache_key=key,
        sha256=stored.sha256,
        size_bytes=stored.size_bytes,
        duration_ms=ms,
        mime_type="audio/mpeg",
        engine=engine,
        voice="",
        text=text,
    )
    row, _ = tts_service.record_asset(session=session, asset=asset, repair_id=repair_id)
    return row


def assemble(*, session: Session, settings: Settings, playlist: Playlist) -> AudioAsset:
    """The playlist as one MP3 asset (items synthesised or fetched, joined, repeated, stored)."""
    if not playlist.items:
        raise PlaylistError("items", "the playlist is empty")
    assets = [_item_asset(session, settings, item) for item in playlist.items]
    key_source = {
        "v": ASSEMBLY_VERSION,
        "items": [a.sha256 for a in assets],
        "repeat": playlist.repeat,
        "gap_ms": playlist.gap_ms,
        "bitrate": audio.BITRATE,
    }
    key = hashlib.sha256(json.dumps(key_source, sort_keys=True).encode()).hexdigest()
    existing = session.scalars(select(AudioAsset).where(AudioAsset.cache_key == key)).one_or_none()
    if existing is not None and store.exists(settings.audio_dir, existing.sha256):
        return existing
    # An existing row without its file (deleted by hand, restored backup) is repaired in place.
    paths = [tts_service.asset_path(settings=settings, asset=a) for a in assets]
    joined = audio.join(paths, repeat=playlist.repeat, gap_ms=playlist.gap_ms)  # AssemblyError: Unavailable
    with store.staging(settings.audio_dir) as staged:
        audio.encode_mp3(joined, staged)
        asset = _store_asset(
            session, key=key, staged=staged, audio_dir=settings.audio_dir, engine=PLAYLIST_ENGINE,
            text=f"playlist {playlist.id} r{playlist.revision}: {playlist.name}",
            repair_id=existing.id if existing is not None else None,
        )  # fmt: skip
    log.info(
        "assembled playlist %s (revision %s, %d items x %d) into asset %s, %d ms",
        playlist.id, playlist.revision, len(assets), playlist.repeat, asset.id, asset.duration_ms,
    )  # fmt: skip
    return asset


def store_upload(*, session: Session, settings: Settings, path: Path, filename: str) -> AudioAsset:
    """Validate an uploaded recording (already on disk, within the size limit) and store it
    normalised, as the speech stage does."""
    if path.stat().st_size == 0:
        raise PlaylistError("file", "empty upload")
    try:
        result = tts_service.store_recording_sync(
            session=session, settings=settings, path=path, title=(filename or "")[:200]
        )
    except tts_audio.NotAudio as exc:
        raise PlaylistError("file", f"{filename or 'the upload'} is not usable audio: {exc}") from None
    return result.asset
