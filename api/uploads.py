"""Receiving an uploaded file: streamed to a staging file in the audio directory, never held whole in
memory, and refused with 413 as soon as it passes `audio.max_upload_mb`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import HTTPException, UploadFile, status

from core.settings import Settings
from tts import store

# Bytes read from the upload at a time: one upload holds at most this much in Python at once.
UPLOAD_CHUNK = 1 << 20


@contextmanager
def staged_upload(file: UploadFile, settings: Settings) -> Iterator[Path]:
    """Yield the path of a staging file holding the upload; it is removed on exit unless stored."""
    limit = settings.audio.max_upload_mb * 1024 * 1024
    with store.staging(settings.audio_dir, suffix=".upload") as staged:
        size = 0
        with open(staged, "wb") as out:
            while chunk := file.file.read(UPLOAD_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise HTTPException(
                        status_code=status.HTTP_413_CONTENT_TOO_LARGE,
                        detail=f"file is larger than {settings.audio.max_upload_mb} MB",
                    )
                out.write(chunk)
        yield staged
