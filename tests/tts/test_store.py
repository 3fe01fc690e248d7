"""The content-addressed store: layout, digest validation, atomic placement."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tts import store


def test_path_layout(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    assert store.path_for(tmp_path, digest) == tmp_path / digest[:2] / f"{digest}.mp3"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "../../etc/passwd",
        "a" * 63,
        "a" * 65,
        "A" * 64,  # upper case would be a second name for the same file
        "g" * 64,
        "../" + "a" * 61,
        "a" * 62 + "/.",
        "a" * 63 + "\n",
    ],
)
def test_malformed_digests_never_become_paths(tmp_path: Path, bad: str) -> None:
    assert not store.is_sha256(bad)
    with pytest.raises(ValueError, match="SHA-256"):
        store.path_for(tmp_path, bad)


def test_put_moves_a_staged_file_to_its_content_address(tmp_path: Path) -> None:
    data = b"ID3 not really an mp3"
    with store.staging(tmp_path) as staged:
        staged.write_bytes(data)
        stored = store.put(tmp_path, staged)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.path.read_bytes() == data
    assert stored.size_bytes == len(data)
    assert store.exists(tmp_path, stored.sha256)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [stored.path]


def test_staging_leaves_nothing_behind_on_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), store.staging(tmp_path) as staged:
        staged.write_bytes(b"half a file")
        raise RuntimeError("encoder died")
    assert list(tmp_path.iterdir()) == []
