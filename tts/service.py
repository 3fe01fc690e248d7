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

Both take a sync SQLAlchemy `Session` (the project has no async sessions). A new asset is inserted
in a SAVEPOINT (so losing a race rolls back nothing of the caller's) and then the session is
committed: the row must be visible to other requests as soon as its file is in the store.
A cache hit does not commit.

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
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydub import AudioSegment
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.settings import Settings
from tts import audio, store, voices
from tts import text as text_prep
from tts.engines import Engine, EngineError, check_pitch, check_rate, get_engine
from tts.exceptions import SpeechInputError, SynthesisFailed
from tts.models import AudioAsset
from tts.reading import read_aloud

logger = logging.getLogger(__name__)

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
    _check("rate", check_rate, rate)
    _check("pitch", check_pitch, pitch)
    try:
        params = audio.AssemblyParams.from_settings(
            settings.audio,
            volume=volume,
            repeat=repeat,
            chime=chime,
            closing_chime=closing_chime,
            title=_title(prepared),
        )
    except ValueError as exc:
        raise SpeechInputError("volume" if "volume" in str(exc) else "repeat", str(exc)) from None
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
        asset = existing or AudioAsset(cache_key=key, mime_type=MIME_TYPE)
        asset.engine, asset.voice, asset.text = speech_engine.name, engine_voice, prepared
        asset.requested_engine, asset.fallback_reason = chain[0][0].name, reason
        asset.rate, asset.volume, asset.pitch = rate, volume, pitch
        return _record(
            session=session, settings=settings, asset=asset, stored=stored, duration_ms=duration_ms
        )

    raise SynthesisFailed(failures)


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
    try:
        params = audio.AssemblyParams.from_settings(
            settings.audio, volume=volume, repeat=repeat, chime=chime, closing_chime=closing_chime,
            title=title[:TITLE_CHARS],
        )  # fmt: skip
    except ValueError as exc:
        raise SpeechInputError("volume" if "volume" in str(exc) else "repeat", str(exc)) from None
    key = _digest({"upload": store.sha256_file(path), "assembly": params.as_dict()})
    audio_dir = settings.audio_dir
    existing = session.scalars(select(AudioAsset).where(AudioAsset.cache_key == key)).one_or_none()
    if existing is not None and store.exists(audio_dir, existing.sha256):
        return SynthesisResult(existing, cached=True, path=store.path_for(audio_dir, existing.sha256))

    def work() -> tuple[store.StoredFile, int]:
        segment = audio.decode(path)
        if audio.integrated_loudness(segment) is None:
            raise audio.NotAudio("the recording is silent")
        with store.staging(audio_dir) as staged:
            duration_ms = audio.assemble_speech(segment, dest=staged, params=params)
            return store.put(audio_dir, staged), duration_ms

    stored, duration_ms = await asyncio.to_thread(work)
    asset = existing or AudioAsset(cache_key=key, mime_type=MIME_TYPE)
    asset.engine, asset.voice, asset.text = UPLOAD_ENGINE, probe.kind, title or None
    asset.requested_engine, asset.volume = UPLOAD_ENGINE, volume
    logger.info("stored %s recording (%.1f s) as %s ms asset", probe.kind, probe.duration_s, duration_ms)
    return _record(session=session, settings=settings, asset=asset, stored=stored, duration_ms=duration_ms)


def _record(
    *, session: Session, settings: Settings, asset: AudioAsset, stored: store.StoredFile, duration_ms: int
) -> SynthesisResult:
    """Insert (or repair) the asset row for a file just stored; resolve a race with an identical request."""
    audio_dir = settings.audio_dir
    _fill(asset, stored=stored, duration_ms=duration_ms)
    if asset.id is not None:
        # The row outlived its file (deleted by hand, restored backup): repaired in place.
        session.commit()
        return SynthesisResult(asset, cached=False, path=stored.path, fallback_reason=asset.fallback_reason)
    try:
        with session.begin_nested():
            session.add(asset)
    except IntegrityError:
        winner = session.scalars(select(AudioAsset).where(AudioAsset.cache_key == asset.cache_key)).one()
        logger.info("asset %s was stored by a concurrent identical request", winner.id)
        if winner.sha256 != stored.sha256 and get_by_sha256(session=session, sha256=stored.sha256) is None:
            store.remove(audio_dir, stored.sha256)
        session.commit()
        return SynthesisResult(
            winner, cached=True, path=store.path_for(audio_dir, winner.sha256),
            fallback_reason=asset.fallback_reason,
        )  # fmt: skip
    session.commit()
    return SynthesisResult(asset, cached=False, path=stored.path, fallback_reason=asset.fallback_reason)


def _check(field: str, check, value: int) -> None:
    try:
        check(value)
    except ValueError as exc:
        raise SpeechInputError(field, str(exc)) from None


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


def cleanup(
    *,
    session: Session,
    settings: Settings,
    referenced_ids: Collection[int],
    min_age: timedelta = timedelta(days=1),
    dry_run: bool = False,
) -> CleanupReport:
    """Delete assets not in referenced_ids (and older than min_age), and store files no asset names.

    The caller passes every asset id still in use (broadcasts, playlists): tts knows nothing of them.
    ``min_age`` protects a fresh preview that staff are about to schedule.
    """
    cutoff = utcnow() - min_age
    referenced = set(referenced_ids)
    assets = session.scalars(select(AudioAsset)).all()
    unused = [a for a in assets if a.id not in referenced]
    old_ids = {a.id for a in unused if _aware(a.created_at) <= cutoff}
    keep = {a.sha256 for a in assets if a.id not in old_ids}  # files a surviving row still names
    freed = {a.sha256 for a in assets if a.id in old_ids} - keep
    if old_ids and not dry_run:
        session.execute(delete(AudioAsset).where(AudioAsset.id.in_(old_ids)))
        session.commit()

    files = bytes_freed = 0
    audio_dir = Path(settings.audio_dir)
    now = time.time()
    for path in sorted(audio_dir.glob(f"??/*{store.SUFFIX}")):
        digest = path.stem
        if not store.is_sha256(digest) or digest in keep:
            continue
        stat = path.stat()
        if digest not in freed and now - stat.st_mtime < min_age.total_seconds():
            continue  # no row yet: possibly being recorded right now
        files += 1
        bytes_freed += stat.st_size
        if not dry_run:
            path.unlink(missing_ok=True)
    for staged in audio_dir.glob(f"{store.STAGING_PREFIX}*"):
        if not dry_run and now - staged.stat().st_mtime > STALE_STAGING.total_seconds():
            staged.unlink(missing_ok=True)
    report = CleanupReport(
        assets_removed=len(old_ids), files_removed=files, bytes_freed=bytes_freed,
        assets_kept_young=len(unused) - len(old_ids),
    )  # fmt: skip
    logger.info("audio cleanup%s: %s", " (dry run)" if dry_run else "", report)
    return report


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
