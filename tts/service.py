"""Speech synthesis verbs: text in, a stored, cached `AudioAsset` out.

How to call it
--------------
- From async code (APScheduler jobs, async routes): ``await synthesize(session=..., settings=..., text=...)``.
  The engine runs as an asyncio subprocess and the CPU-bound assembly runs in a worker thread,
  so the event loop stays responsive; the database work is a few indexed statements on the
  (sync) session, done on the loop thread.
- From sync code (FastAPI ``def`` routes, which run in a threadpool; the CLI):
  ``synthesize_sync(session=..., settings=..., text=...)``. It runs the same async core with
  ``asyncio.run`` in the calling thread, so it must not be called from a thread that is already
  running an event loop (it raises RuntimeError there instead of deadlocking; await `synthesize`).

Both take a sync SQLAlchemy `Session` (the project has no async sessions). A new asset is inserted
in a SAVEPOINT (so losing a race rolls back nothing of the caller's) and then the session is
committed: the row must be visible to other requests as soon as its file is in the store.
A cache hit does not commit.

Caching
-------
``cache_key`` = SHA-256 of a canonical JSON of what decides the audio: the prepared text, the
engine's parameters (name, voice, effective speed), the assembly parameters, the piece length
and `CACHE_VERSION`. An asset whose key matches and whose file is present is returned without
synthesis. Two identical requests racing both synthesise; the unique ``cache_key`` lets exactly
one row in and the other call returns that row (its own file is removed if nothing uses it).
Bump `CACHE_VERSION` when text preparation or assembly changes in a way the parameters do not show.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.settings import Settings
from tts import audio, store
from tts import text as text_prep
from tts.engines import Engine, check_rate, get_engine
from tts.models import AudioAsset

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
MIME_TYPE = "audio/mpeg"
# Pieces synthesised at once: espeak-ng is one process per piece (2 cores here); the online
# engine must stay well below the service's rate limits.
ENGINE_CONCURRENCY = 2


@dataclass(frozen=True)
class SynthesisResult:
    asset: AudioAsset
    # True when no synthesis was needed: the asset existed (or a concurrent identical request made it).
    cached: bool
    path: Path


def cache_key(*, prepared_text: str, engine: Engine, voice: str, rate: int, settings: Settings) -> str:
    """Return the cache key of a request: SHA-256 of a canonical JSON of what decides the audio."""
    payload = {
        "version": CACHE_VERSION,
        "text": prepared_text,
        "engine": engine.cache_params(voice=voice, rate=rate),
        "piece_chars": engine.max_piece_chars,
        "assembly": audio.AssemblyParams.from_settings(settings.audio).as_dict(),
    }
    canonical = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


async def synthesize(
    *,
    session: Session,
    settings: Settings,
    text: str,
    voice: str | None = None,
    engine: str | None = None,
    rate: int = 0,
) -> SynthesisResult:
    """Return the asset speaking text: from the cache, or synthesised, stored and recorded now."""
    prepared = text_prep.prepare(text, max_chars=settings.tts.max_chars)
    speech_engine = get_engine(engine, settings)
    voice = voice or speech_engine.default_voice
    check_rate(rate)
    key = cache_key(prepared_text=prepared, engine=speech_engine, voice=voice, rate=rate, settings=settings)
    audio_dir = settings.audio_dir

    existing = session.scalars(select(AudioAsset).where(AudioAsset.cache_key == key)).one_or_none()
    if existing is not None and store.exists(audio_dir, existing.sha256):
        logger.debug("cache hit %s -> asset %s", key, existing.id)
        return SynthesisResult(existing, cached=True, path=store.path_for(audio_dir, existing.sha256))

    started = time.perf_counter()
    pieces = text_prep.split(prepared, max_chars=speech_engine.max_piece_chars)
    params = audio.AssemblyParams.from_settings(settings.audio)
    with tempfile.TemporaryDirectory(prefix="cunxiang-tts-") as work:
        files = await _speak_pieces(speech_engine, pieces, voice=voice, rate=rate, out_dir=Path(work))
        stored, duration_ms = await asyncio.to_thread(_assemble_and_store, files, audio_dir, params)
    logger.info(
        "synthesised %s chars in %s pieces with %s/%s: %s ms of audio, %s bytes, in %.2f s",
        len(prepared), len(pieces), speech_engine.name, voice, duration_ms, stored.size_bytes,
        time.perf_counter() - started,
    )  # fmt: skip

    if existing is not None:
        # The row outlived its file (deleted by hand, restored backup): repair it in place.
        _fill(existing, stored=stored, duration_ms=duration_ms)
        session.commit()
        return SynthesisResult(existing, cached=False, path=stored.path)

    asset = AudioAsset(
        cache_key=key, engine=speech_engine.name, voice=voice, text=prepared, mime_type=MIME_TYPE
    )
    _fill(asset, stored=stored, duration_ms=duration_ms)
    try:
        with session.begin_nested():
            session.add(asset)
    except IntegrityError:
        winner = session.scalars(select(AudioAsset).where(AudioAsset.cache_key == key)).one()
        logger.info("asset %s was stored by a concurrent identical request", winner.id)
        if winner.sha256 != stored.sha256 and get_by_sha256(session=session, sha256=stored.sha256) is None:
            store.remove(audio_dir, stored.sha256)
        session.commit()
        return SynthesisResult(winner, cached=True, path=store.path_for(audio_dir, winner.sha256))
    session.commit()
    return SynthesisResult(asset, cached=False, path=stored.path)


def synthesize_sync(
    *,
    session: Session,
    settings: Settings,
    text: str,
    voice: str | None = None,
    engine: str | None = None,
    rate: int = 0,
) -> SynthesisResult:
    """Blocking `synthesize` for sync callers (threadpool routes, CLI); not for event-loop threads."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("synthesize_sync() called from a running event loop; use `await synthesize(...)`")
    return asyncio.run(
        synthesize(session=session, settings=settings, text=text, voice=voice, engine=engine, rate=rate)
    )


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
    engine: Engine, pieces: list[str], *, voice: str, rate: int, out_dir: Path
) -> list[Path]:
    limit = asyncio.Semaphore(ENGINE_CONCURRENCY)

    async def one(piece: str) -> Path:
        async with limit:
            return await engine.synthesize(piece, voice=voice, rate=rate, out_dir=out_dir)

    # TaskGroup cancels (and so kills) the remaining pieces as soon as one fails; callers want
    # that failure, not a group of identical ones.
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(piece)) for piece in pieces]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


def _assemble_and_store(
    files: list[Path], audio_dir: Path, params: audio.AssemblyParams
) -> tuple[store.StoredFile, int]:
    with store.staging(audio_dir) as staged:
        duration_ms = audio.assemble(files, dest=staged, params=params)
        return store.put(audio_dir, staged), duration_ms


def _fill(asset: AudioAsset, *, stored: store.StoredFile, duration_ms: int) -> None:
    asset.sha256 = stored.sha256
    asset.size_bytes = stored.size_bytes
    asset.duration_ms = duration_ms
