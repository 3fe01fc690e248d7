"""Engines: espeak-ng for real, the registry, and the errors a user would see."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import pytest

from core.settings import Settings
from tts.engines import Engine, EngineError, EspeakEngine, get_engine
from tts.exceptions import SpeechInputError

SENTENCE = "各位村民请注意。"


def _no_espeak_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_registry_builds_the_configured_engine() -> None:
    settings = Settings(tts={"engine": "espeak", "espeak_voice": "cmn", "espeak_speed": 120})
    engine = get_engine(None, settings)
    assert isinstance(engine, EspeakEngine)
    assert isinstance(engine, Engine)
    assert engine.default_voice == "cmn"
    assert engine.cache_params(voice="cmn", rate=0) == {"engine": "espeak", "voice": "cmn", "wpm": 120}
    assert engine.cache_params(voice="cmn", rate=-25)["wpm"] == 90


def test_unknown_engine_is_named_in_the_error() -> None:
    with pytest.raises(EngineError, match=r"unknown speech engine 'nope'; known: edge, espeak"):
        get_engine("nope", Settings())


@pytest.mark.parametrize("rate", [-51, 101, 1.5, True, "-20%"])
@pytest.mark.parametrize("name", ["espeak", "edge"])
def test_rate_out_of_range_is_refused_naming_the_field(tmp_path: Path, name: str, rate: object) -> None:
    engine = get_engine(name, Settings(data_dir=tmp_path))
    with pytest.raises(SpeechInputError, match="rate must be") as refused:
        engine.cache_params(voice="cmn", rate=rate)  # type: ignore[arg-type]
    assert refused.value.field == "speech.rate"


@pytest.mark.parametrize("pitch", [-51, 51, "+5Hz"])
@pytest.mark.parametrize("name", ["espeak", "edge"])
def test_pitch_out_of_range_is_refused_naming_the_field(tmp_path: Path, name: str, pitch: object) -> None:
    engine = get_engine(name, Settings(data_dir=tmp_path))
    with pytest.raises(SpeechInputError, match="pitch must be") as refused:
        engine.cache_params(voice="cmn", rate=0, pitch=pitch)  # type: ignore[arg-type]
    assert refused.value.field == "speech.pitch"


def test_espeak_writes_mono_wav_speech(tmp_path: Path) -> None:
    engine = EspeakEngine()
    assert engine.available()
    out = asyncio.run(engine.synthesize(SENTENCE, voice="cmn", rate=0, out_dir=tmp_path))
    assert out.parent == tmp_path
    with wave.open(str(out)) as wav:
        assert wav.getnchannels() == 1
        seconds = wav.getnframes() / wav.getframerate()
    assert 1.0 < seconds < 10.0


def test_slower_rate_gives_longer_audio(tmp_path: Path) -> None:
    engine = EspeakEngine()

    def seconds(rate: int) -> float:
        out = asyncio.run(engine.synthesize(SENTENCE * 3, voice="cmn", rate=rate, out_dir=tmp_path))
        with wave.open(str(out)) as wav:
            return wav.getnframes() / wav.getframerate()

    assert seconds(-30) > seconds(0) * 1.2


def test_missing_espeak_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    _no_espeak_path(tmp_path, monkeypatch)
    engine = EspeakEngine()
    assert not engine.available()
    with pytest.raises(EngineError, match="espeak-ng.*not found on PATH"):
        asyncio.run(engine.synthesize(SENTENCE, voice="cmn", rate=0, out_dir=out_dir))
    assert list(out_dir.iterdir()) == []


def test_unknown_voice_reports_espeak_stderr(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="voice 'xx-nosuch'.*does not exist"):
        asyncio.run(EspeakEngine().synthesize(SENTENCE, voice="xx-nosuch", rate=0, out_dir=tmp_path))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("voice", ["-w/etc/passwd", "cmn; rm -rf /", "", "a b"])
def test_voice_names_that_look_like_options_are_refused(tmp_path: Path, voice: str) -> None:
    with pytest.raises(EngineError, match="invalid voice name"):
        asyncio.run(EspeakEngine().synthesize(SENTENCE, voice=voice, rate=0, out_dir=tmp_path))


def test_text_is_never_parsed_as_options(tmp_path: Path) -> None:
    # Text goes through stdin: a notice that starts like an option is just read out.
    out = asyncio.run(EspeakEngine().synthesize("-w /tmp/x --help", voice="cmn", rate=0, out_dir=tmp_path))
    assert out.stat().st_size > 1000


def test_timeout_kills_espeak_and_cleans_up(tmp_path: Path) -> None:
    engine = EspeakEngine(timeout_s=0.001)
    with pytest.raises(EngineError, match="no result after"):
        asyncio.run(engine.synthesize(SENTENCE * 100, voice="cmn", rate=0, out_dir=tmp_path))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("prosody", "field"), [({"rate": "-20%"}, "speech.rate"), ({"pitch": "+5Hz"}, "speech.pitch")]
)
def test_edge_refuses_edge_tts_strings_before_edge_tts_can_raise_value_error(
    tmp_path: Path, prosody: dict, field: str
) -> None:
    """edge-tts itself raises ValueError for a malformed rate/pitch: the engine never lets one through."""
    engine = get_engine("edge", Settings(data_dir=tmp_path))
    options = {"rate": 0, **prosody}
    with pytest.raises(SpeechInputError) as refused:
        asyncio.run(engine.synthesize(SENTENCE, voice="zh-CN-XiaoxiaoNeural", out_dir=tmp_path, **options))
    assert refused.value.field == field and not isinstance(refused.value, ValueError)
