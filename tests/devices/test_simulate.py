"""Simulated speakers: deterministic behaviours, a township broadcast, 700 speakers on the embedded broker."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from cunxiang_shared import protocol
from cunxiang_shared.broker import parse_broker_url
from devices.simulate import Simulator, SpeakerSpec, pick_behaviours
from tests.fixtures_mqtt import AudioServer, BrokerThread, clear_retained

COUNTY = "341225000000"


def test_pick_behaviours_is_deterministic_and_exact() -> None:
    ids = [f"d{i}" for i in range(200)]
    picked = pick_behaviours(ids, fail_rate=0.1, silent_rate=0.05, seed=3)
    assert picked == pick_behaviours(reversed(ids), fail_rate=0.1, silent_rate=0.05, seed=3)
    assert sorted(picked.values()).count("fail") == 20
    assert sorted(picked.values()).count("silent") == 10
    assert picked != pick_behaviours(ids, fail_rate=0.1, silent_rate=0.05, seed=4)
    with pytest.raises(ValueError, match="rates"):
        pick_behaviours(ids, fail_rate=0.8, silent_rate=0.3, seed=0)
    more = pick_behaviours(ids, fail_rate=0.1, silent_rate=0.05, seed=3, flaky_rate=0.2, drift_rate=0.25)
    assert [list(more.values()).count(b) for b in ("fail", "silent", "flaky", "drift", "ok")] == [
        20,
        10,
        40,
        50,
        80,
    ]
    assert {d for d, b in more.items() if b in ("fail", "silent")} == {
        d for d, b in picked.items() if b != "ok"
    }  # adding kinds of trouble does not reshuffle the old ones


def test_township_broadcast_reaches_its_villages_only(
    broker_url: str, audio_server: AudioServer, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    here, there = "341225100000", "341225101000"
    specs = [SpeakerSpec(f"s{tag}-{i}", f"341225100{201 + i % 3:03d}") for i in range(12)]
    specs[0] = SpeakerSpec(specs[0].device_id, specs[0].area_code, "fail")
    specs[1] = SpeakerSpec(specs[1].device_id, specs[1].area_code, "silent")
    specs += [SpeakerSpec(f"s{tag}-x{i}", f"341225101{201 + i:03d}") for i in range(3)]
    # A uniquely named copy of the MP3, so the download count belongs to this test.
    name = f"{tag}.mp3"
    shutil.copy(audio_server.directory / "tone.mp3", audio_server.directory / name)
    now = datetime.now(UTC)
    command = protocol.PlayCommand(
        occurrence_id=9001,
        broadcast_id=1,
        audio_url=f"{audio_server.base_url}/{name}",
        sha256=audio_server.sha256,
        size_bytes=audio_server.size_bytes,
        duration_s=0.2,
        start_at=now + timedelta(seconds=0.5),
        expires_at=now + timedelta(seconds=30),
        priority=20,
    )

    async def scenario() -> dict[str, list[tuple[int, str]]]:
        async with Simulator(specs, broker_url, tmp_path / "cache") as sim:
            await sim.wait_ready(10)
            address = parse_broker_url(broker_url)
            async with aiomqtt.Client(
                address.host, address.port, protocol=aiomqtt.ProtocolVersion.V311
            ) as server:
                await server.publish(protocol.area_command_topic(here), protocol.encode(command), qos=1)
                await server.publish(protocol.area_command_topic(there), b"not for them either", qos=1)
            await sim.wait_finished(9001, 11, timeout=10)
            await asyncio.sleep(0.2)  # nothing more may arrive
            outcomes = sim.all_outcomes()
        await clear_retained(broker_url, [s.device_id for s in specs])
        return outcomes

    outcomes = asyncio.run(scenario())
    assert outcomes[specs[0].device_id] == [(9001, "failed")]
    assert outcomes[specs[1].device_id] == []
    assert all(outcomes[s.device_id] == [(9001, "played")] for s in specs[2:12])
    assert all(outcomes[s.device_id] == [] for s in specs[12:])
    assert audio_server.hits[f"/{name}"] == 1  # eleven speakers, one download


@pytest.mark.slow
def test_700_speakers_connect_to_the_embedded_broker_and_play_a_county_broadcast(tmp_path: Path) -> None:
    """The demo county's size: every speaker connects, and one county-wide publish reaches them all."""
    broker = BrokerThread().start()
    specs = [SpeakerSpec(f"load-{i:03d}", f"341225{100 + i // 50:03d}{201 + i % 50:03d}") for i in range(700)]
    cache = tmp_path / "cache"
    cache.mkdir()
    audio = b"\xff\xfb" * 500
    sha256 = hashlib.sha256(audio).hexdigest()
    (cache / f"{sha256}.mp3").write_bytes(audio)  # pre-cached: this test is about MQTT, not HTTP
    now = datetime.now(UTC)
    command = protocol.PlayCommand(
        occurrence_id=1,
        broadcast_id=1,
        audio_url="http://127.0.0.1:9/cached.mp3",
        sha256=sha256,
        size_bytes=len(audio),
        duration_s=0.5,
        start_at=now,
        expires_at=now + timedelta(minutes=2),
        priority=50,
    )

    async def scenario() -> tuple[float, float]:
        async with Simulator(specs, broker.url, cache) as sim:
            connected = await sim.wait_ready(60)
            address = parse_broker_url(broker.url)
            began = time.monotonic()
            async with aiomqtt.Client(
                address.host, address.port, protocol=aiomqtt.ProtocolVersion.V311
            ) as server:
                await server.publish(protocol.area_command_topic(COUNTY), protocol.encode(command), qos=1)
            await sim.wait_finished(1, len(specs), timeout=60)
            played = time.monotonic() - began
            assert all(o == [(1, "played")] for o in sim.all_outcomes().values())
            return connected, played

    try:
        connected, played = asyncio.run(scenario())
    finally:
        broker.stop()
    print(f"\n700 speakers: connected in {connected:.1f} s, county broadcast played by all in {played:.1f} s")
    assert connected < 30
