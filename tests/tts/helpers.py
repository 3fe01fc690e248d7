"""Measurements of produced audio with the real tools (ffprobe, ffmpeg's EBU R128 meter)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path


def ffprobe_ms(path: Path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return round(float(out) * 1000)


def loudness(path: Path) -> tuple[float, float]:
    """(integrated loudness in LUFS, sample peak in dBFS) as ffmpeg's ebur128 filter measures them."""
    args = ["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-af", "ebur128=peak=sample"]
    err = subprocess.run([*args, "-f", "null", "-"], capture_output=True, text=True, check=True).stderr
    integrated = re.findall(r"I:\s+(-?[\d.]+) LUFS", err)
    peak = re.findall(r"Peak:\s+(-?[\d.]+|-inf) dBFS", err)
    assert integrated and peak, err
    return float(integrated[-1]), float(peak[-1])


def id3_title(path: Path) -> str:
    return subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format_tags=title", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def files_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []
