"""Forged, tampered, misaddressed, expired and replayed commands against a real agent over real
brokers (amqtt and Mosquitto): nothing plays, the volume does not move, and every refusal is
counted and shows up in the speaker's status."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cunxiang_shared import protocol
from cunxiang_shared.signing import DOMAIN, Signer, b64url, canonical
from tests.devices.test_agent import SIGNER, VILLAGE, play, running, signed
from tests.fixtures_mqtt import AudioServer


class RecordingPlayer:
    """Plays nothing but remembers every file it was asked to play."""

    def __init__(self) -> None:
        self.played: list[Path] = []
        self.tones = 0

    async def play(self, path: Path, duration_s: float, volume: int) -> None:
        self.played.append(path)
        await asyncio.sleep(duration_s)

    async def tone(self, duration_s: float, volume: int, work_dir: Path) -> None:
        self.tones += 1
        await asyncio.sleep(duration_s)


def _json(command) -> dict:
    return json.loads(protocol.encode(command))


def test_forged_and_tampered_commands_play_nothing(
    broker_url: str, audio_server: AudioServer, tmp_path: Path
) -> None:
    player = RecordingPlayer()
    forger = Signer.generate()

    async def scenario() -> None:
        async with running(broker_url, tmp_path, player=player) as h:
            topic = protocol.area_command_topic(VILLAGE)
            sibling = protocol.area_command_topic("341225100202")
            # 1. unsigned, as the foundation's server sent them
            await h.send(topic, protocol.encode(play(audio_server, 201, priority=100)))
            # 2. signed by a key the speaker does not know
            await h.send(topic, signed(play(audio_server, 202), topic, signer=forger))
            # 3. a forger's signature under the server's key id
            forged = forger.sign(_json(play(audio_server, 203)), [topic])
            forged["key_id"] = SIGNER.key_id
            forged["sig"] = b64url(forger.private_key.sign(DOMAIN + canonical(forged)))
            await h.send(topic, json.dumps(forged).encode())
            # 4. a genuine command with one field changed on the way (louder, more urgent)
            tampered = json.loads(signed(play(audio_server, 204, priority=10), topic))
            tampered["priority"] = 100
            await h.send(topic, json.dumps(tampered).encode())
            # 5. a genuine command for the sibling village, republished on ours
            await h.send(topic, signed(play(audio_server, 205), sibling))
            # 6. an unsigned volume change and a genuine one signed for another speaker
            await h.send(topic, protocol.encode(protocol.SetVolumeCommand(volume=100)))
            other = protocol.device_topic("someone-else", "cmd")
            await h.send(
                protocol.device_topic(h.speaker.device_id, "cmd"),
                signed(protocol.SetVolumeCommand(volume=5), other),
            )
            # the speaker is alive and obeys the real server
            await h.send(topic, play(audio_server, 206))
            assert await h.final(206) == ["received", "playing", "played"]
            await h.until(lambda: h.statuses and (h.statuses[-1].rejected or {}).get("wrong_topic") == 2)

            assert [r.occurrence_id for r in h.reports] == [206, 206, 206]
            assert len(player.played) == 1
            assert h.speaker.volume == 80
            assert dict(h.speaker.rejected) == {
                "unsigned": 2, "unknown_key": 1, "bad_signature": 2, "wrong_topic": 2,
            }  # fmt: skip
            status = h.statuses[-1]
            assert status.rejected == dict(h.speaker.rejected)
            assert status.last_rejection is not None and status.last_rejection.reason == "wrong_topic"
            assert status.last_rejection.topic == protocol.device_topic(h.speaker.device_id, "cmd")

    asyncio.run(scenario())


def test_expired_commands_are_refused(broker_url: str, audio_server: AudioServer, tmp_path: Path) -> None:
    player = RecordingPlayer()

    async def scenario() -> None:
        async with running(broker_url, tmp_path, player=player) as h:
            topic = protocol.device_topic(h.speaker.device_id, "cmd")
            old = datetime.now(UTC) - timedelta(minutes=10)
            await h.send(topic, protocol.SetVolumeCommand(volume=10, issued_at=old))  # expired 5 min ago
            await h.send(
                topic, protocol.TestToneCommand(issued_at=old, expires_at=old + timedelta(seconds=1))
            )
            past = datetime.now(UTC) - timedelta(minutes=3)
            await h.send(
                topic, play(audio_server, 301, start_at=past, expires_at=past + timedelta(minutes=1))
            )
            assert await h.final(301) == ["skipped"]  # a late play is reported, not played
            await h.until(lambda: h.statuses and (h.statuses[-1].rejected or {}).get("expired") == 2)
            assert h.speaker.volume == 80 and player.played == [] and player.tones == 0

    asyncio.run(scenario())


def test_replayed_commands_do_nothing_even_after_a_restart(
    broker_url: str, audio_server: AudioServer, tmp_path: Path
) -> None:
    player = RecordingPlayer()
    state = tmp_path / "state.json"
    device_id = f"replay-{tmp_path.name[-8:]}".replace("_", "-")

    async def scenario() -> None:
        topic = protocol.area_command_topic(VILLAGE)
        dev = protocol.device_topic(device_id, "cmd")
        first_play = signed(play(audio_server, 401), topic)
        quiet = signed(protocol.SetVolumeCommand(volume=30), dev)
        async with running(broker_url, tmp_path, player=player, state_file=state, device_id=device_id) as h:
            await h.send(topic, first_play)
            assert await h.final(401) == ["received", "playing", "played"]
            await h.send(dev, quiet)
            await h.send(dev, protocol.SetVolumeCommand(volume=70))
            await h.until(lambda: h.statuses and h.statuses[-1].volume == 70)
            # an eavesdropper replays what it recorded
            await h.send(topic, first_play)
            await h.send(dev, quiet)
            await h.send(topic, play(audio_server, 402))
            await h.final(402)
            assert h.states(401) == ["received", "playing", "played"]
            assert h.speaker.volume == 70 and h.speaker.counters["duplicate"] == 2
        async with running(broker_url, tmp_path, player=player, state_file=state, device_id=device_id) as h:
            assert h.speaker.volume == 70  # kept across the restart
            await h.send(topic, first_play)
            await h.send(dev, quiet)
            await h.send(topic, play(audio_server, 403))
            await h.final(403)
            assert h.states(401) == [] and h.speaker.volume == 70
            assert h.speaker.counters["duplicate"] == 2
        assert len(player.played) == 3  # 401, 402, 403 once each

    asyncio.run(scenario())
