"""The voice catalogue: which voices exist, in which dialect, and whether they work right now.

Each voice belongs to one engine; its id is what requests name (``zh-CN-XiaoxiaoNeural``, ``cmn``).
The edge voices come from a built-in list (so a server that starts offline still knows them), and
are refreshed from the service (`edge_tts.list_voices`) at most every
``settings.tts.voices_refresh_s``; the last fetched list is kept in the data directory so a restart
without network keeps it. Only Chinese voices are listed: the catalogue is for announcers.

``available`` is the engine's own verdict (espeak-ng installed; edge reached recently and not in
its post-failure cooldown, see `tts.edge`). Another engine lists its voices with `register_voices`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import edge_tts

from core.settings import Settings
from tts import edge
from tts.engines import EngineError, get_engine

logger = logging.getLogger(__name__)

# A catalogue refresh must never hold up a request for long.
REFRESH_TIMEOUT_S = 5.0
# After a failed refresh, wait this long before trying again.
REFRESH_RETRY_S = 60.0
CACHE_FILE = "edge-voices.json"


@dataclass(frozen=True)
class Voice:
    id: str
    engine: str
    locale: str
    gender: str  # "female" | "male"
    dialect: str  # Chinese label shown to staff: 普通话, 东北话, 陕西话, 粤语, 台湾普通话 ...
    name: str  # short display name, e.g. 晓晓
    available: bool = True


# (locale prefix, label), most specific first.
_DIALECTS = [
    ("zh-CN-liaoning", "东北话"),
    ("zh-CN-shaanxi", "陕西话"),
    ("zh-CN-sichuan", "四川话"),
    ("zh-CN-henan", "河南话"),
    ("zh-CN-shandong", "山东话"),
    ("zh-CN-guangxi", "广西普通话"),
    ("zh-HK", "粤语"),
    ("zh-TW", "台湾普通话"),
    ("zh-CN", "普通话"),
    ("zh", "中文"),
]

_NAMES = {
    "Xiaoxiao": "晓晓", "Xiaoyi": "晓伊", "Yunjian": "云健", "Yunxi": "云希", "Yunxia": "云夏",
    "Yunyang": "云扬", "Xiaobei": "晓北", "Xiaoni": "晓妮", "HiuGaai": "曉佳", "HiuMaan": "曉曼",
    "WanLung": "雲龍", "HsiaoChen": "曉臻", "HsiaoYu": "曉雨", "YunJhe": "雲哲",
}  # fmt: skip

# The Chinese voices of the Edge list (edge-tts 7.3.1): (ShortName, gender).
EDGE_BUILTIN = [
    ("zh-CN-XiaoxiaoNeural", "female"),
    ("zh-CN-XiaoyiNeural", "female"),
    ("zh-CN-YunjianNeural", "male"),
    ("zh-CN-YunxiNeural", "male"),
    ("zh-CN-YunxiaNeural", "male"),
    ("zh-CN-YunyangNeural", "male"),
    ("zh-CN-liaoning-XiaobeiNeural", "female"),
    ("zh-CN-shaanxi-XiaoniNeural", "female"),
    ("zh-HK-HiuGaaiNeural", "female"),
    ("zh-HK-HiuMaanNeural", "female"),
    ("zh-HK-WanLungNeural", "male"),
    ("zh-TW-HsiaoChenNeural", "female"),
    ("zh-TW-HsiaoYuNeural", "female"),
    ("zh-TW-YunJheNeural", "male"),
]

ESPEAK_BUILTIN = [
    Voice(id="cmn", engine="espeak", locale="zh-CN", gender="male", dialect="普通话", name="espeak 普通话"),
    Voice(id="yue", engine="espeak", locale="zh-HK", gender="male", dialect="粤语", name="espeak 粤语"),
]

_extra: dict[str, list[Voice]] = {}


def register_voices(engine: str, voices: list[Voice]) -> None:
    """List the voices of another engine (registered with `tts.engines.register_engine`)."""
    _extra[engine] = list(voices)


def dialect_of(locale: str) -> str:
    """The Chinese dialect label for a locale such as ``zh-CN-liaoning``."""
    for prefix, label in _DIALECTS:
        if locale == prefix or locale.startswith(prefix + "-"):
            return label
    return locale


def edge_voice(short_name: str, gender: str) -> Voice:
    """Describe an edge voice from its ShortName (``zh-CN-liaoning-XiaobeiNeural``)."""
    locale, _, person = short_name.rpartition("-")
    person = person.removesuffix("Neural")
    return Voice(
        id=short_name,
        engine="edge",
        locale=locale,
        gender=gender.lower(),
        dialect=dialect_of(locale),
        name=_NAMES.get(person, person),
    )


class _EdgeList:
    """The edge voice list: built in, then fetched from the service and kept on disk."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.voices = [edge_voice(name, gender) for name, gender in EDGE_BUILTIN]
        self.fetched_at = 0.0  # monotonic time of the last successful fetch (0: never)
        self.next_try = 0.0
        self.source = "builtin"
        self._loaded_from: Path | None = None

    def load(self, data_dir: Path) -> None:
        path = data_dir / CACHE_FILE
        if self._loaded_from == path:
            return
        self._loaded_from = path
        try:
            voices = [Voice(**item) for item in json.loads(path.read_text("utf-8"))]
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError) as exc:
            logger.warning("ignoring unreadable %s: %s", path, exc)
            return
        if voices:
            self.voices, self.source = voices, "cache"

    def refresh_due(self, settings: Settings) -> bool:
        now = time.monotonic()
        stale = not self.fetched_at or now - self.fetched_at >= settings.tts.voices_refresh_s
        return stale and now >= self.next_try

    async def refresh(self, settings: Settings) -> bool:
        """Fetch the list from the service; False (and the old list kept) when that fails."""
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT_S):
                raw = await edge_tts.list_voices()
        except Exception as exc:  # offline, refused, malformed answer: keep what we have
            with self._lock:
                self.next_try = time.monotonic() + REFRESH_RETRY_S
            edge.HEALTH.mark_down(f"voice list: {exc or type(exc).__name__}")
            logger.info("edge voice list not refreshed: %s", exc)
            return False
        voices = [
            edge_voice(item["ShortName"], item.get("Gender", ""))
            for item in raw
            if str(item.get("Locale", "")).startswith("zh-") and item.get("ShortName")
        ]
        if not voices:
            logger.warning("edge voice list has no Chinese voices; keeping the previous list")
            return False
        edge.HEALTH.mark_up()
        with self._lock:
            self.voices, self.source = voices, "service"
            self.fetched_at = time.monotonic()
        _save(settings.data_dir / CACHE_FILE, voices)
        return True


def _save(path: Path, voices: list[Voice]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps([asdict(v) for v in voices], ensure_ascii=False, indent=1), "utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("cannot keep the edge voice list in %s: %s", path, exc)


EDGE_LIST = _EdgeList()


def reset() -> None:
    """Back to the built-in list (tests)."""
    global EDGE_LIST
    EDGE_LIST = _EdgeList()


def _espeak_voices(settings: Settings) -> list[Voice]:
    voices = list(ESPEAK_BUILTIN)
    configured = settings.tts.espeak_voice
    if all(v.id != configured for v in voices):
        voices.insert(0, replace(ESPEAK_BUILTIN[0], id=configured, name=f"espeak {configured}"))
    return voices


def all_voices(settings: Settings) -> list[Voice]:
    """Every known voice (without refreshing), each marked with whether its engine works now."""
    EDGE_LIST.load(settings.data_dir)
    by_engine = {"edge": EDGE_LIST.voices, "espeak": _espeak_voices(settings), **_extra}
    result: list[Voice] = []
    for engine_name, voices in by_engine.items():
        try:
            available = get_engine(engine_name, settings).available()
        except EngineError:
            available = False
        result.extend(replace(v, available=available) for v in voices)
    return result


async def catalogue(*, settings: Settings, refresh: bool = True) -> list[Voice]:
    """The voice catalogue, refreshing the edge list first when it is due (and `refresh`)."""
    EDGE_LIST.load(settings.data_dir)
    if refresh and EDGE_LIST.refresh_due(settings):
        await EDGE_LIST.refresh(settings)
    return all_voices(settings)


def find(voice_id: str, settings: Settings) -> Voice | None:
    """The voice with this id, or None."""
    return next((v for v in all_voices(settings) if v.id == voice_id), None)


def counterpart(voice: Voice, engine: str, settings: Settings) -> str:
    """The voice of another engine closest to this one: same locale, else same language, else default."""
    candidates = [v for v in all_voices(settings) if v.engine == engine]
    for match in (
        lambda v: v.locale == voice.locale and v.gender == voice.gender,
        lambda v: v.locale == voice.locale,
        lambda v: v.locale.split("-")[0] == voice.locale.split("-")[0] and v.dialect == "普通话",
    ):
        found = next((v for v in candidates if match(v)), None)
        if found is not None:
            return found.id
    return get_engine(engine, settings).default_voice
