"""Speech benchmark: the pipeline against the raw tools, and a cache hit against a cold synthesis.

    python bench/speech.py [--runs 3] [--chars 2000]

1. A 2,000-character notice through `tts.service.synthesize` (espeak-ng engine, default assembly:
   lead-in, EBU R128 loudness, MP3) against espeak-ng + ffmpeg run directly on the same spoken text
   with the same encoder settings. Goal: pipeline <= 1.3x the raw tools.
2. The same request again (served from the cache) against the cold synthesis. Goal: >= 100x.

Each figure is the median of --runs runs (a fresh data directory per cold run).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Result, Unavailable, print_results, run_main  # noqa: E402  (puts the checkout on sys.path)

from core.db import Base, make_engine, make_session_factory  # noqa: E402
from core.settings import Settings  # noqa: E402
from tts import audio, service  # noqa: E402
from tts.reading import read_aloud  # noqa: E402
from tts.text import prepare  # noqa: E402

SENTENCES = [
    "各位村民请注意，2024年度城乡居民医疗保险缴费工作已经开始。",
    "缴费标准为每人每年380元，截止日期为2024年12月31日。",
    "请大家及时到村委会或者通过手机缴纳，不要错过时间。",
    "缴费时间为每天上午8:30到下午17:00，节假日照常办理。",
    "如有疑问，请拨打村委会电话0558-6512345咨询，或者拨打12345热线。",
    "已经缴费的村民，请保管好收据；外出务工的村民，请家人代为办理！",
    "目前全村已有85.5%的村民完成缴费，感谢大家的支持和配合。",
]


def notice(chars: int) -> str:
    text, i = "", 0
    while len(text) < chars:
        text += SENTENCES[i % len(SENTENCES)]
        i += 1
        if i % len(SENTENCES) == 0:
            text += "\n"
    return text[:chars].rstrip("\n，") + "。"


def raw_tools(spoken: str, work: Path, settings: Settings) -> float:
    wav, mp3 = work / "raw.wav", work / "raw.mp3"
    started = time.perf_counter()
    subprocess.run(
        ["espeak-ng", "-v", settings.tts.espeak_voice, "-s", str(settings.tts.espeak_speed), "--stdin",
         "-w", str(wav)],
        input=spoken.encode(), check=True,
    )  # fmt: skip
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(wav), "-c:a", "libmp3lame", "-b:a", settings.audio.bitrate,
         "-compression_level", str(audio.LAME_QUALITY), "-ar", str(settings.audio.sample_rate), "-ac", "1",
         str(mp3)],
        check=True,
    )  # fmt: skip
    return time.perf_counter() - started


def pipeline(text: str, work: Path) -> tuple[float, float, int]:
    """(cold seconds, cache-hit seconds, duration ms) in a fresh data directory."""
    settings = Settings(data_dir=work, tts={"engine": "espeak", "fallback": []})
    engine = make_engine(settings.database_url)
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    try:
        with factory() as session:
            started = time.perf_counter()
            cold = service.synthesize_sync(session=session, settings=settings, text=text)
            cold_s = time.perf_counter() - started
            assert not cold.cached
        hits = []
        for _ in range(20):
            with factory() as session:
                started = time.perf_counter()
                hit = service.synthesize_sync(session=session, settings=settings, text=text)
                hits.append(time.perf_counter() - started)
                assert hit.cached and hit.asset.id == cold.asset.id
        return cold_s, statistics.median(hits), cold.asset.duration_ms
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chars", type=int, default=2000)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (for the test suite)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs, args.chars = 1, 200
    if not (shutil.which("espeak-ng") and shutil.which("ffmpeg")):
        raise Unavailable("espeak-ng and ffmpeg must be installed (apt-get install espeak-ng ffmpeg)")
    logging.basicConfig(level=logging.WARNING)

    text = notice(args.chars)
    spoken = read_aloud(prepare(text))
    settings = Settings()
    raw, cold, hit, duration_ms = [], [], [], 0
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-speech-") as work:
            raw.append(raw_tools(spoken, Path(work), settings))
            c, h, duration_ms = pipeline(text, Path(work) / "data")
            cold.append(c)
            hit.append(h)
    raw_s, cold_s, hit_s = (statistics.median(x) for x in (raw, cold, hit))
    cache_ratio = cold_s / hit_s

    print_results(
        f"speech: {len(text)}-character notice, {duration_ms / 1000:.0f} s of audio, "
        f"median of {args.runs} run(s)",
        [
            Result("pipeline, cold (split, speak, R128, MP3, store)", cold_s, "s",
                   "espeak-ng + ffmpeg run directly on the same text", raw_s,
                   higher_is_better=False, goal_ratio=1.3),
            Result("pipeline, cache hit", hit_s, "s", "pipeline, cold synthesis", cold_s,
                   higher_is_better=False, goal_ratio=0.01),
        ],
        notes=[f"cold / cache hit = {cache_ratio:.0f}x (goal >= 100x)"],
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
