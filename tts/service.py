"""Speech synthesis verbs: text (or a recording) in, a stored, cached `AudioAsset` out.

How to call it
--------------
- From async code (APScheduler jobs, async routes): ``await synthesize(session=..., settings=..., text=...)``.
  The engines run as asyncio subprocesses / websocket clients and the CPU-bound assembly runs in a
  worker thread, so the event loop stays responsive; the database work is a few indexed statements
  on the (sync) session, done on the loop thread.
- From sync code (FastAPI ``def`` routes, which run in a threadpool; the CLI):
  ``synthesize_sync(session=..., settings=..., text=...)``. It runs the same async core with
  ``asyncio.run`` in the calling thread, so it must not be called from a thread that is already
  running an event loop (it raises RuntimeError there instead of deadlocking; await `synthesize`).

Both take a sync SQLAlchemy `Session` (the project has no async sessions) and never commit it: the
use case that called them does (`tts.flows`, `playlists.flows`, the scheduler's flows).

The asset row is a cache entry, not part of the caller's change
-------------------------------------------------------------------
Once a file is in the store, its row is recorded at once in a short transaction of its own
(`record_asset`: a separate session on the same database, committed before synthesis returns),
and the caller's session then loads it. This keeps what the service's old ``session.commit()``
gave, without committing anything of the caller's:

- synthesis is slow and paid for (seconds of engine time, a rate-limited online service): a caller
  that rolls back after it (a broadcast refused for quiet hours, a playlist whose later item fails)
  does not lose the audio, and the next identical request is a cache hit;
- a concurrent identical request never waits on the caller's open transaction to find out whether
  the row exists (PostgreSQL holds a second insert of the same unique ``cache_key`` until the
  first transaction ends; SQLite holds every writer): it finds the committed row, or loses the
  insert race at once and returns the winner;
- the caller's transaction takes no write lock for the cache: on SQLite a playlist whose items are
  synthesised one after another does not hold the database's one write lock through the engines.

One exception, on SQLite only: when the caller's transaction already holds the write lock (it has
written before asking for audio), a second connection would wait for it (busy timeout) and fail.
Then the row is inserted in the caller's transaction, in a SAVEPOINT (losing a race rolls back
nothing of the caller's), and becomes durable with the caller's commit.
A cache hit writes nothing.

Engines and fallback
--------------------
The voice decides the engine (`tts.voices`); with no voice, ``settings.tts.engine`` and its default
voice. The chain is that engine, then ``settings.tts.fallback`` in order (default: edge, then
espeak), each with its closest voice. An engine that is unavailable (espeak-ng missing, edge in its
cooldown after a failure) is skipped; one that fails is recorded and the next is tried. The asset
records the engine that produced it, the one requested, and why the ones before it failed; when
every engine fails, `SynthesisFailed` carries all the reasons and nothing is stored.

Caching
-------
``cache_key`` = SHA-256 of a canonical JSON of what decides the audio: the spoken text (after
`tts.text.prepare` and `tts.reading.read_aloud`), the engine's parameters (name, voice, effective
speed, pitch), the assembly parameters (bitrate, loudness target, volume, repeat, chimes, ...), the
piece length and `CACHE_VERSION`. It is computed per engine of the chain: the requested engine's
asset is looked up first; a fallback's asset is returned only after the requested engine failed.
An asset whose key matches and whose file is present is returned without synthesis. Two identical
requests racing both synthesise; the unique ``cache_key`` lets exactly one row in and the other
call returns that row (its own file is removed if nothing uses it). Bump `CACHE_VERSION` when
text preparation or assembly changes in a way the parameters do not show.

Callers pass the request as `tts.schemas.SpeechSettings` (``**speech.options()``): preview,
broadcasts and playlist text items use that one shape, so the same text and settings find the same
asset. ``prefer_asset_id`` returns an earlier asset of the same request even when it came from a
fallback engine (what staff heard in a preview is what airs).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from pydub import AudioSegment
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import regions
from core.clock import utcnow
from core.models import User
from core.settings import Settings
from tts import audio, store, voices
from tts import text as text_prep
from tts.base import Engine, check_pitch, check_rate
from tts.engines import get_engine
from tts.exceptions import EngineError, SpeechInputError, SynthesisFailed
from tts.models import AssetArea, AudioAsset
from tts.reading import read_aloud

logger = logging.getLogger(__name__)

T = TypeVar("T")

CACHE_VERSION = 2
MIME_TYPE = "audio/mpeg"
UPLOAD_ENGINE = "upload"
# Pieces synthesised at once: espeak-ng is one process per piece (2 cores here); the online
# engine also holds a process-wide connection slot (tts.edge).
ENGINE_CONCURRENCY = 2
# The ID3 title: the start of the notice.
TITLE_CHARS = 40
# Staging files older than this are leftovers of a crashed process, not work in progress.
STALE_STAGING = timedelta(hours=1)


@dataclass(frozen=True)
class SynthesisResult:
    asset: AudioAsset
    # True when no synthesis was needed: the asset existed (or a concurrent identical request made it).
    cached: bool
    path: Path
    # Why engines before the one that made this audio were not used, for this request (None: none).
    fallback_reason: str | None = None


def _no_autoflush(func: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Run a verb without flushing the caller's pending changes: its lookups concern assets only, and
    a flush would open the caller's write transaction early (on SQLite: take the one write lock,
    which `record_asset` then has to share)."""

    @functools.wraps(func)
    async def run(*, session: Session, **kwargs: Any) -> T:
        with session.no_autoflush:
            return await func(session=session, **kwargs)

    return run


def cache_key(
    *,
    prepared_text: str,
    engine: Engine,
    voice: str,
    rate: int,
    settings: Settings,
    pitch: int = 0,
    params: audio.AssemblyParams | None = None,
) -> str:
    """Return the cache key of a request: SHA-256 of a canonical JSON of what decides the audio."""
    params = params or audio.AssemblyParams.from_settings(settings.audio)
    return _digest(
        {
            "text": prepared_text,
            "engine": engine.cache_params(voice=voice, rate=rate, pitch=pitch),
            "piece_chars": engine.max_piece_chars,
            "assembly": params.as_dict(),
        }
    )


def _digest(payload: dict) -> str:
    canonical = json.dumps(
        {"version": CACHE_VERSION, **payload}, ensure_ascii=False, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def plan(
    *, settings: Settings, voice: str | None = None, engine: str | None = None
) -> list[tuple[Engine, str]]:
    """The engines to try, in order, each with the voice to ask it for; SpeechInputError for a bad voice."""
    if voice:
        found = voices.find(voice, settings)
        if found is None:
            if engine is None:
                raise SpeechInputError("voice", f"unknown voice {voice!r}; the list is at GET /api/v1/voices")
            found = voices.Voice(id=voice, engine=engine, locale="zh-CN", gender="", dialect="", name=voice)
        if engine is not None and engine != found.engine:
            raise SpeechInputError(
                "voice", f"voice {voice!r} belongs to engine {found.engine!r}, not {engine!r}"
            )
        first = get_engine(found.engine, settings)
        chosen = found
    else:
        first = get_engine(engine, settings)
        chosen = voices.find(first.default_voice, settings) or voices.Voice(
            id=first.default_voice, engine=first.name, locale="zh-CN", gender="", dialect="", name=""
        )
    chain = [(first, chosen.id)]
    for name in settings.tts.fallback:
        if name != first.name and all(e.name != name for e, _ in chain):
            chain.append((get_engine(name, settings), voices.counterpart(chosen, name, settings)))
    return chain


@_no_autoflush
async def synthesize(
    *,
    session: Session,
    settings: Settings,
    text: str,
    voice: str | None = None,
    engine: str | None = None,
    rate: int = 0,
    pitch: int = 0,
    volume: int = 0,
    repeat: int = 1,
    chime: bool = False,
    closing_chime: bool = False,
    prefer_asset_id: int | None = None,
) -> SynthesisResult:
    """Return the asset speaking text: from the cache, or synthesised (with fallback), stored and recorded.

    ``prefer_asset_id`` names an asset made earlier for this request (the preview staff heard): when it
    is what these text and settings produce with any engine of the chain, it is returned as it is,
    even if it came from a fallback engine and the requested one works again.
    """
    prepared = text_prep.prepare(text, max_chars=settings.tts.max_chars)
    spoken = read_aloud(prepared)
    check_rate(rate)
    check_pitch(pitch)
    params = audio.AssemblyParams.from_settings(
        settings.audio,
        volume=volume,
        repeat=repeat,
        chime=chime,
        closing_chime=closing_chime,
        title=_title(prepared),
    )
    chain = plan(settings=settings, voice=voice, engine=engine)
    audio_dir = settings.audio_dir
    failures: list[tuple[str, str]] = []
    keys = [
        cache_key(
            prepared_text=spoken, engine=e, voice=v, rate=rate, pitch=pitch, settings=settings, params=params
        )
        for e, v in chain
    ]
    preferred = session.get(AudioAsset, prefer_asset_id) if prefer_asset_id is not None else None
    if preferred is not None and preferred.cache_key in keys:
        if store.exists(audio_dir, preferred.sha256):
            return SynthesisResult(
                preferred, cached=True, path=store.path_for(audio_dir, preferred.sha256),
                fallback_reason=preferred.fallback_reason,
            )  # fmt: skip

    for (speech_engine, engine_voice), key in zip(chain, keys, strict=True):
        reason = "; ".join(f"{name}: {why}" for name, why in failures) or None
        existing = session.scalars(select(AudioAsset).where(AudioAsset.cache_key == key)).one_or_none()
        if existing is not None and store.exists(audio_dir, existing.sha256):
            logger.debug("cache hit %s -> asset %s", key, existing.id)
            return SynthesisResult(
                existing, cached=True, path=store.path_for(audio_dir, existing.sha256), fallback_reason=reason
            )
        if not speech_engine.available():
            failures.append((speech_engine.name, speech_engine.unavailable_reason()))
            continue

        started = time.perf_counter()
        pieces = text_prep.split(spoken, max_chars=speech_engine.max_piece_chars)
        with tempfile.TemporaryDirectory(prefix="cunxiang-tts-") as work:
            try:
                segments, loudness = await _speak_pieces(
                    speech_engine, pieces, voice=engine_voice, rate=rate, pitch=pitch, out_dir=Path(work),
                    measure_gap_ms=params.gap_ms if params.loudness_lufs is not None else None,
                )  # fmt: skip
            except EngineError as exc:
                logger.warning("%s failed, trying the next engine: %s", speech_engine.name, exc)
                failures.append((speech_engine.name, str(exc)))
                continue
        stored, duration_ms = await asyncio.to_thread(
            _assemble_and_store, segments, audio_dir, params, loudness
        )
        logger.info(
            "synthesised %s chars in %s pieces with %s/%s: %s ms of audio, %s bytes, in %.2f s%s",
            len(prepared), len(pieces), speech_engine.name, engine_voice, duration_ms, stored.size_bytes,
            time.perf_counter() - started, f" (fallback: {reason})" if reason else "",
        )  # fmt: skip
        asset = AudioAsset(
            cache_key=key, mime_type=MIME_TYPE, engine=speech_engine.name, voice=engine_voice, text=prepared,
            requested_engine=chain[0][0].name, fallback_reason=reason, rate=rate, volume=volume, pitch=pitch,
        )  # fmt: skip
        return _record(
            session=session, settings=settings, asset=asset, stored=stored, duration_ms=duration_ms,
            repair_id=existing.id if existing is not None else None,
        )  # fmt: skip

    raise SynthesisFailed(failures)


@_no_autoflush
async def store_recording(
    *,
    session: Session,
    settings: Settings,
    path: Path,
    title: str = "",
    volume: int = 0,
    repeat: int = 1,
    chime: bool = False,
    closing_chime: bool = False,
) -> SynthesisResult:
    """Validate a recorded MP3/WAV/M4A (audio.NotAudio if it is not one) and store it normalised."""
    max_s = settings.audio.max_upload_s
    probe = await asyncio.to_thread(audio.probe_upload, path, max_seconds=max_s)
    params = audio.AssemblyParams.from_settings(
        settings.audio, volume=volume, repeat=repeat, chime=chime, closing_chime=closing_chime,
        title=title[:TITLE_CHARS],
    )  # fmt: skip
    key = _digest({"upload": store.sha256_file(path), "assembly": params.as_dict()})
    audio_dir = settings.audio_dir
    existing = session.scalars(select(AudioAsset).where(AudioAsset.cache_key == key)).one_or_none()
    if existing is not None and store.exists(audio_dir, existing.sha256):
        return SynthesisResult(existing, cached=True, path=store.path_for(audio_dir, existing.sha256))

    def work() -> tuple[store.StoredFile, int]:
        segment = audio.decode(path, frame_rate=settings.audio.sample_rate, max_seconds=max_s)
        if audio.integrated_loudness(segment) is None:
            raise audio.NotAudio("the recording is silent")
        with store.staging(audio_dir) as staged:
            duration_ms = audio.assemble_speech(segment, dest=staged, params=params)
            return store.put(audio_dir, staged), duration_ms

    stored, duration_ms = await asyncio.to_thread(work)
    asset = AudioAsset(
        cache_key=key, mime_type=MIME_TYPE, engine=UPLOAD_ENGINE, voice=probe.kind, text=title or None,
        requested_engine=UPLOAD_ENGINE, volume=volume,
    )  # fmt: skip
    logger.info("stored %s recording (%.1f s) as %s ms asset", probe.kind, probe.duration_s, duration_ms)
    return _record(
        session=session, settings=settings, asset=asset, stored=stored, duration_ms=duration_ms,
        repair_id=existing.id if existing is not None else None,
    )  # fmt: skip


def _record(
    *,
    session: Session,
    settings: Settings,
    asset: AudioAsset,
    stored: store.StoredFile,
    duration_ms: int,
    repair_id: int | None,
) -> SynthesisResult:
    """Record the asset row for a file just stored; resolve a race with an identical request."""
    audio_dir = settings.audio_dir
    _fill(asset, stored=stored, duration_ms=duration_ms)
    row, won = record_asset(session=session, asset=asset, repair_id=repair_id)
    if won:
        return SynthesisResult(row, cached=False, path=stored.path, fallback_reason=asset.fallback_reason)
    logger.info("asset %s was stored by a concurrent identical request", row.id)
    if row.sha256 != stored.sha256 and get_by_sha256(session=session, sha256=stored.sha256) is None:
        store.remove(audio_dir, stored.sha256)
    return SynthesisResult(
        row, cached=True, path=store.path_for(audio_dir, row.sha256), fallback_reason=asset.fallback_reason
    )


def record_asset(
    *, session: Session, asset: AudioAsset, repair_id: int | None = None
) -> tuple[AudioAsset, bool]:
    """Record a stored file's row durably now (module doc); return it in `session`, and False if a twin won.

    ``repair_id`` names an existing row of the same key whose file was missing: it is updated in
    place. The caller's session is written to only on SQLite when it already holds the write lock.
    """
    if _holds_sqlite_write_lock(session):
        return _insert_or_repair(session, asset, repair_id=repair_id)
    with Session(bind=session.get_bind(AudioAsset), expire_on_commit=False) as own:
        row, won = _insert_or_repair(own, asset, repair_id=repair_id)
        own.commit()
        row_id = row.id
    # populate_existing: the caller's copy of a repaired row is stale.
    return session.get(AudioAsset, row_id, populate_existing=True), won


# Not copied onto a row being repaired: its identity and age stay.
_NOT_COPIED = frozenset({"id", "cache_key", "created_at"})


def _insert_or_repair(
    session: Session, asset: AudioAsset, *, repair_id: int | None
) -> tuple[AudioAsset, bool]:
    if repair_id is not None:
        row = session.get(AudioAsset, repair_id)
        if row is not None:  # the row outlived its file (deleted by hand, restored backup)
            for name in AudioAsset.__table__.columns.keys():
                if name not in _NOT_COPIED and name in vars(asset):
                    setattr(row, name, getattr(asset, name))
            session.flush()
            return row, True
    try:
        with session.begin_nested():  # losing the race rolls back this insert only
            session.add(asset)
    except IntegrityError:
        winner = session.scalars(select(AudioAsset).where(AudioAsset.cache_key == asset.cache_key)).one()
        return winner, False
    return asset, True


def _holds_sqlite_write_lock(session: Session) -> bool:
    """Whether the session's SQLite connection is inside a write transaction (SQLite has one
    writer: a second connection would wait for this one). Never on other databases."""
    if session.get_bind(AudioAsset).dialect.name != "sqlite" or not session.in_transaction():
        return False
    # pysqlite begins a transaction only before the first write: in_transaction means "has written".
    return bool(getattr(session.connection().connection.driver_connection, "in_transaction", False))


def _title(prepared: str) -> str:
    first = prepared.split("\n", 1)[0]
    return first if len(first) <= TITLE_CHARS else first[: TITLE_CHARS - 1] + "…"


def synthesize_sync(*, session: Session, settings: Settings, text: str, **options) -> SynthesisResult:
    """Blocking `synthesize` (same options) for sync callers (threadpool routes, CLI); not in a loop."""
    _not_in_loop("synthesize_sync", "synthesize")
    return asyncio.run(synthesize(session=session, settings=settings, text=text, **options))


def store_recording_sync(*, session: Session, settings: Settings, path: Path, **options) -> SynthesisResult:
    """Blocking `store_recording` for sync callers; not for event-loop threads."""
    _not_in_loop("store_recording_sync", "store_recording")
    return asyncio.run(store_recording(session=session, settings=settings, path=path, **options))


def _not_in_loop(name: str, instead: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"{name}() called from a running event loop; use `await {instead}(...)`")


def get_asset(*, session: Session, asset_id: int) -> AudioAsset | None:
    """Return the audio asset with this id, or None."""
    return session.get(AudioAsset, asset_id)


def grant(*, session: Session, asset: AudioAsset, user: User) -> None:
    """Let the user's area air `asset` by its id (nothing for an unbound user, who may use all); flushed."""
    if user.area_code is None:
        return
    if session.get(AssetArea, (asset.id, user.area_code)) is None:
        session.add(AssetArea(asset_id=asset.id, area_code=user.area_code))
        session.flush()


def usable_by(*, session: Session, asset: AudioAsset, user: User) -> bool:
    """Whether the user may air `asset` by its id: unbound users always; a bound user when the
    asset was handed to the user's area or an area inside it."""
    if user.area_code is None:
        return True
    areas = session.scalars(select(AssetArea.area_code).where(AssetArea.asset_id == asset.id)).all()
    return any(regions.is_under(code, user.area_code) for code in areas)


def get_by_sha256(*, session: Session, sha256: str) -> AudioAsset | None:
    """Return an audio asset whose file has this SHA-256, or None (also for malformed digests)."""
    if not store.is_sha256(sha256):
        return None
    return session.scalars(select(AudioAsset).where(AudioAsset.sha256 == sha256).limit(1)).first()


def asset_path(*, settings: Settings, asset: AudioAsset) -> Path:
    """Return where the asset's file is stored."""
    return store.path_for(settings.audio_dir, asset.sha256)


async def _speak_pieces(
    engine: Engine,
    pieces: list[str],
    *,
    voice: str,
    rate: int,
    pitch: int,
    out_dir: Path,
    measure_gap_ms: int | None,
) -> tuple[list[AudioSegment], float | None]:
    """Synthesise and decode the pieces (ENGINE_CONCURRENCY at once), in order.

    With ``measure_gap_ms`` the joined speech (pieces with that gap between them, as `audio.assemble`
    joins them) is also measured for loudness, by one `audio.LoudnessMeter` fed each piece in order
    as soon as it and those before it are ready: the measurement runs alongside the synthesis of the
    later pieces. Returns (pieces, loudness); loudness is `audio.UNMEASURED` without measure_gap_ms.
    """
    limit = asyncio.Semaphore(ENGINE_CONCURRENCY)
    meter: audio.LoudnessMeter | None = None

    async def one(piece: str) -> AudioSegment:
        async with limit:
            path = await engine.synthesize(piece, voice=voice, rate=rate, pitch=pitch, out_dir=out_dir)
        return await asyncio.to_thread(audio.decode_piece, path)

    async def measure_in_order(tasks: list[asyncio.Task[AudioSegment]], gap_ms: int) -> None:
        nonlocal meter
        for i, task in enumerate(tasks):
            segment = await asyncio.shield(task)  # its failure is the group's; do not cancel it from here
            if meter is None:
                # Started here, not in a worker thread: one cancelled while starting it would
                # leave an ffmpeg nobody closes.
                meter = audio.LoudnessMeter(frame_rate=segment.frame_rate)
            if i:
                await asyncio.to_thread(meter.feed_silence, gap_ms)
            await asyncio.to_thread(meter.feed, segment)

    # TaskGroup cancels (and so kills) the remaining pieces as soon as one fails; callers want
    # that failure, not a group of identical ones.
    try:
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(piece)) for piece in pieces]
                if measure_gap_ms is not None:
                    group.create_task(measure_in_order(tasks, measure_gap_ms))
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        loudness = audio.UNMEASURED
        if meter is not None:
            loudness = await asyncio.to_thread(meter.result)
    finally:
        if meter is not None:
            meter.close()
    return [task.result() for task in tasks], loudness


def _assemble_and_store(
    segments: list[AudioSegment], audio_dir: Path, params: audio.AssemblyParams, loudness: float | None
) -> tuple[store.StoredFile, int]:
    with store.staging(audio_dir) as staged:
        duration_ms = audio.assemble(segments, dest=staged, params=params, loudness=loudness)
        return store.put(audio_dir, staged), duration_ms


def _fill(asset: AudioAsset, *, stored: store.StoredFile, duration_ms: int) -> None:
    asset.sha256 = stored.sha256
    asset.size_bytes = stored.size_bytes
    asset.duration_ms = duration_ms


@dataclass(frozen=True)
class CleanupReport:
    assets_removed: int
    files_removed: int
    bytes_freed: int
    # Unused assets younger than min_age, left for a broadcast that may still be created from them.
    assets_kept_young: int


@dataclass(frozen=True)
class CleanupPlan:
    """What `cleanup` would remove: rows first (`delete_assets`), files after the commit (`remove_files`)."""

    asset_ids: frozenset[int]
    files: tuple[Path, ...]
    bytes_freed: int
    assets_kept_young: int
    # Staging files of crashed processes (not counted in the report).
    stale_staging: tuple[Path, ...] = ()

    def report(self) -> CleanupReport:
        return CleanupReport(
            assets_removed=len(self.asset_ids), files_removed=len(self.files), bytes_freed=self.bytes_freed,
            assets_kept_young=self.assets_kept_young,
        )  # fmt: skip


def plan_cleanup(
    *,
    session: Session,
    settings: Settings,
    referenced_ids: Collection[int],
    min_age: timedelta = timedelta(days=1),
) -> CleanupPlan:
    """Find assets not in referenced_ids (and older than min_age), and store files no asset names.

    The caller passes every asset id still in use (broadcasts, playlists): tts knows nothing of them.
    ``min_age`` protects a fresh preview that staff are about to schedule. Reads only.
    """
    cutoff = utcnow() - min_age
    referenced = set(referenced_ids)
    assets = session.scalars(select(AudioAsset)).all()
    unused = [a for a in assets if a.id not in referenced]
    old_ids = {a.id for a in unused if _aware(a.created_at) <= cutoff}
    keep = {a.sha256 for a in assets if a.id not in old_ids}  # files a surviving row still names
    freed = {a.sha256 for a in assets if a.id in old_ids} - keep

    files: list[Path] = []
    bytes_freed = 0
    audio_dir = Path(settings.audio_dir)
    now = time.time()
    for path in sorted(audio_dir.glob(f"??/*{store.SUFFIX}")):
        digest = path.stem
        if not store.is_sha256(digest) or digest in keep:
            continue
        stat = path.stat()
        if digest not in freed and now - stat.st_mtime < min_age.total_seconds():
            continue  # no row yet: possibly being recorded right now
        files.append(path)
        bytes_freed += stat.st_size
    stale = tuple(
        staged
        for staged in audio_dir.glob(f"{store.STAGING_PREFIX}*")
        if now - staged.stat().st_mtime > STALE_STAGING.total_seconds()
    )
    return CleanupPlan(
        asset_ids=frozenset(old_ids), files=tuple(files), bytes_freed=bytes_freed,
        assets_kept_young=len(unused) - len(old_ids), stale_staging=stale,
    )  # fmt: skip


def delete_assets(*, session: Session, asset_ids: Collection[int]) -> None:
    """Delete these asset rows (flushed; their files go with `remove_files` after the commit)."""
    if asset_ids:
        session.execute(delete(AssetArea).where(AssetArea.asset_id.in_(set(asset_ids))))
        session.execute(delete(AudioAsset).where(AudioAsset.id.in_(set(asset_ids))))
        session.flush()


def remove_files(*, plan: CleanupPlan) -> None:
    """Delete the files of a cleanup plan; call only after the rows' deletion is committed."""
    for path in (*plan.files, *plan.stale_staging):
        path.unlink(missing_ok=True)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
