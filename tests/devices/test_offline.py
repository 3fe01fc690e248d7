"""断网续播 at the agent: airings already received play on time with the link down, the reports
follow when it is back (or when the server asks again), a restart of the program keeps pending
airings and unsent reports, and the audio cache stays within its size limit."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cunxiang_agent import speaker as speaker_module
from cunxiang_agent.cache import AudioCache
from cunxiang_shared import protocol
from tests.devices.test_agent import VILLAGE, eventually, play, running
from tests.fixtures_mqtt import AudioServer


def _soon(seconds: float) -> datetime:
    moment = datetime.now(UTC) + timedelta(seconds=seconds)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def test_airings_play_while_the_link_is_down_and_are_reported_after(
    broker_url: str, audio_server: AudioServer, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with running(broker_url, tmp_path) as h:
            topic = protocol.area_command_topic(VILLAGE)
            starts = {601: _soon(0.8), 602: _soon(1.4)}
            for occurrence, start in starts.items():
                await h.send(topic, play(audio_server, occurrence, start_at=start))
            await h.until(lambda: all(h.states(o) == ["received"] for o in starts))
            h.speaker.cut_link(2.5)  # the cable is cut: the broker publishes the last will
            await h.until(lambda: h.online[-1:] == [protocol.OFFLINE])
            await eventually(lambda: all(o in h.speaker.outcomes for o in starts))  # polls: no messages now
            assert not h.speaker.ready.is_set() and h.states(601) == ["received"]  # nothing got out yet
            for occurrence, start in starts.items():
                assert h.speaker.outcomes[occurrence].state == "played"
                assert h.speaker.outcomes[occurrence].at >= start
            await h.until(lambda: all(h.states(o) == ["received", "playing", "played"] for o in starts), 8)
            assert h.online[-1] == protocol.ONLINE
            assert h.report(601, "playing").at >= starts[601]  # the report says when, not when it arrived

    asyncio.run(scenario())


def test_sync_asks_for_reports_again(broker_url: str, audio_server: AudioServer, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running(broker_url, tmp_path) as h:
            topic = protocol.area_command_topic(VILLAGE)
            before = datetime.now(UTC) - timedelta(seconds=1)
            await h.send(topic, play(audio_server, 611))
            assert await h.final(611) == ["received", "playing", "played"]
            await h.send(topic, protocol.SyncCommand(reports_since=before))
            await h.until(lambda: len(h.states(611)) == 6)
            assert h.states(611) == ["received", "playing", "played"] * 2
            await h.send(topic, protocol.SyncCommand(reports_since=datetime.now(UTC) + timedelta(minutes=1)))
            await h.send(topic, play(audio_server, 612))
            await h.final(612)
            assert len(h.states(611)) == 6

    asyncio.run(scenario())


def test_a_restart_keeps_pending_airings_and_unsent_reports(
    broker_url: str, audio_server: AudioServer, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    device_id = f"restart-{os.getpid()}-{int(time.time() * 1000) % 100000}"

    async def scenario() -> None:
        topic = protocol.area_command_topic(VILLAGE)
        start = _soon(2.5)
        async with running(broker_url, tmp_path, state_file=state, device_id=device_id) as h:
            await h.send(topic, play(audio_server, 621, start_at=start))  # tomorrow's programme, say
            await h.send(topic, play(audio_server, 622, duration_s=30))  # on air when the box restarts
            await h.until(lambda: h.states(621) == ["received"] and "playing" in h.states(622))
            await asyncio.sleep(speaker_module.STATE_SAVE_DELAY_S * 2)
        pending = json.loads(state.read_text())["pending"]
        assert [(json.loads(p["command"])["occurrence_id"], p["state"]) for p in pending] == [
            (621, "received"), (622, "playing"),
        ]  # fmt: skip
        # the program is back (power cut, upgrade); nobody resends anything
        async with running(broker_url, tmp_path, state_file=state, device_id=device_id) as h:
            assert await h.final(622) == ["failed"]
            assert h.report(622, "failed").error == speaker_module.INTERRUPTED_BY_RESTART
            assert await h.final(621) == ["playing", "played"]  # `received` was said before the restart
            assert h.report(621, "playing").at >= start
            await h.send(topic, play(audio_server, 621, start_at=start))  # a late duplicate is ignored
            await h.send(topic, play(audio_server, 623))
            await h.final(623)
            assert h.states(621) == ["playing", "played"]
        assert json.loads(state.read_text())["pending"] == []

    asyncio.run(scenario())


def test_cache_evicts_least_recently_used_but_never_a_pinned_file(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path, max_bytes=2500)
    files = {}
    for n, name in enumerate("abcd"):
        sha = name * 64
        path = cache.path_for(sha, "x.mp3")
        path.write_bytes(b"\0" * 1000)
        os.utime(path, (1000 + n, 1000 + n))
        files[name] = path
    (tmp_path / "tone-1000hz-3s.wav").write_bytes(b"\0" * 5000)  # not audio of the cache: untouched
    cache.pin("a" * 64)  # the oldest, but an airing still needs it
    assert cache.prune() == 2
    assert [n for n, p in files.items() if p.exists()] == ["a", "d"]
    assert (tmp_path / "tone-1000hz-3s.wav").exists()
    cache.unpin("a" * 64)
    cache.max_bytes = 1000
    assert cache.prune() == 1 and not files["a"].exists() and files["d"].exists()
