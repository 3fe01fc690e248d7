"""The voice catalogue: dialect labels, offline start, refresh from the (fake) service."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from core.settings import Settings
from tests.tts.fake_edge import FakeEdge
from tts import voices


def by_id(found: list[voices.Voice]) -> dict[str, voices.Voice]:
    return {v.id: v for v in found}


def test_offline_start_lists_builtin_voices_with_edge_unavailable(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    found = by_id(asyncio.run(voices.catalogue(settings=settings)))
    assert found["zh-CN-liaoning-XiaobeiNeural"].dialect == "东北话"
    assert found["zh-CN-shaanxi-XiaoniNeural"].dialect == "陕西话"
    assert found["zh-HK-HiuGaaiNeural"].dialect == "粤语"
    assert found["zh-TW-HsiaoChenNeural"].dialect == "台湾普通话"
    assert (found["zh-CN-YunyangNeural"].dialect, found["zh-CN-YunyangNeural"].gender) == ("普通话", "male")
    assert found["zh-CN-XiaoxiaoNeural"].name == "晓晓"
    assert not any(v.available for v in found.values() if v.engine == "edge")
    assert found["cmn"].available and found["cmn"].engine == "espeak"
    assert found["yue"].dialect == "粤语"


def test_online_refresh_replaces_the_list_and_keeps_it_for_an_offline_restart(
    tmp_path: Path, fake_edge: FakeEdge
) -> None:
    settings = Settings(data_dir=tmp_path)
    found = by_id(asyncio.run(voices.catalogue(settings=settings)))
    assert fake_edge.voice_list_requests == 1
    assert found["zh-CN-sichuan-YunxiNeural"].dialect == "四川话"  # only the service knows this one
    assert "en-US-AriaNeural" not in found  # announcers get Chinese voices only
    assert all(v.available for v in found.values() if v.engine == "edge")
    asyncio.run(voices.catalogue(settings=settings))
    assert fake_edge.voice_list_requests == 1  # cached

    kept = json.loads((tmp_path / voices.CACHE_FILE).read_text("utf-8"))
    assert {v["id"] for v in kept} >= {"zh-CN-sichuan-YunxiNeural"}
    voices.reset()  # a restart
    assert "zh-CN-sichuan-YunxiNeural" in by_id(voices.all_voices(settings))


def test_fallback_voice_keeps_the_language() -> None:
    settings = Settings()
    find = voices.find
    assert voices.counterpart(find("zh-HK-WanLungNeural", settings), "espeak", settings) == "yue"
    assert voices.counterpart(find("zh-CN-shaanxi-XiaoniNeural", settings), "espeak", settings) == "cmn"
    assert voices.counterpart(find("zh-TW-YunJheNeural", settings), "espeak", settings) == "cmn"
