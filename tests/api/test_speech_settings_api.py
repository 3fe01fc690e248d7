"""What staff preview is what airs: one speech-settings shape for preview, broadcasts and playlist
text items, and broadcasts of an existing audio asset, on a live server.

The speakers are real simulated speakers (they download the audio and check its sha256 before
playing); a bare MQTT subscriber reads the play commands the server signs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from core.db import make_engine, make_session_factory, session_scope
from devices import service as device_service
from devices import simulate
from devices.transport import parse_broker_url
from tests.api.conftest import ADMIN, STAFF, make_settings, seed
from tests.live import LiveServer, LiveSpeakers, free_port, server_keys

VILLAGE = "341225100201"  # a village of 鹿城镇, where STAFF works
NOTICE = "各位村民请注意，今天下午三点在村委会召开村民大会，请每户派一名代表参加。"
# Every setting a preview takes, none at its default.
FULL = {
    "voice": "cmn",
    "rate": "-20%",
    "volume": "+10%",
    "pitch": "+5Hz",
    "repeat": 2,
    "chime": True,
    "closing_chime": True,
}
# What GET shows for a text item given no settings.
DEFAULTS = {
    "voice": None,
    "rate": "+0%",
    "volume": "+0%",
    "pitch": "+0Hz",
    "repeat": 1,
    "chime": False,
    "closing_chime": False,
}


def audio_files(settings) -> set[Path]:
    root = settings.audio_dir
    return {p for p in root.rglob("*.mp3") if p.is_file()} if root.exists() else set()


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def occurrence(client, broadcast_id: int) -> dict:
    """The broadcast's one occurrence once it is dispatched (its asset is recorded at dispatch)."""
    return wait(
        lambda: next(
            (o for o in client.get(f"/api/v1/broadcasts/{broadcast_id}").json()["occurrences"]
             if o["asset_id"] is not None),
            None,
        ),
        30,
        f"broadcast {broadcast_id} to be dispatched",
    )  # fmt: skip


class PlayCommands:
    """A bare subscriber on every area command topic that keeps the play commands it receives."""

    def __init__(self, broker_url: str) -> None:
        host, port, _, _ = parse_broker_url(broker_url)
        self._plays: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"plays-{uuid.uuid4().hex[:8]}")
        self._client.on_connect = lambda c, *_: c.subscribe("cx/v1/area/+/cmd", qos=1)
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(host, port)
        self._client.loop_start()
        assert subscribed.wait(10), "the play-command subscriber was not subscribed"

    def _on_message(self, _client, _userdata, msg) -> None:
        command = json.loads(msg.payload)
        if command.get("type") == "play":
            with self._lock:
                self._plays.append(command)

    def of(self, occurrence_id: int) -> list[dict[str, Any]]:
        with self._lock:
            return [c for c in self._plays if c["occurrence_id"] == occurrence_id]

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def test_a_broadcast_of_an_asset_airs_that_exact_file_and_cleanup_keeps_it(
    tmp_path, sqlite_url, embedded_broker_url
):
    seed(sqlite_url)
    speakers = [f"{VILLAGE}-1", f"{VILLAGE}-2"]
    engine = make_engine(sqlite_url)
    with session_scope(make_session_factory(engine)) as s:
        for device in speakers:
            device_service.register(session=s, device_id=device, name=device, area_code=VILLAGE)
    engine.dispose()
    port = free_port()
    settings = make_settings(tmp_path, sqlite_url, embedded_broker_url, port)
    specs = [simulate.SpeakerSpec(device_id=d, area_code=VILLAGE) for d in speakers]
    plays = PlayCommands(embedded_broker_url)
    try:
        with (
            LiveServer(settings, port) as server,
            LiveSpeakers(
                specs, embedded_broker_url, tmp_path / "speaker-cache", trusted_keys=server_keys(settings)
            ) as sp,
            server.client(server.login(*ADMIN)) as c,
        ):
            # A short text: the simulated speakers play in real time, and NOTICE read twice at
            # -20 % between chimes kept this test waiting ~40 s.
            preview = c.post("/api/v1/tts/preview", json={"text": "请开会。", "speech": FULL})
            assert preview.status_code == 200, preview.text
            asset = preview.json()
            unused = c.post("/api/v1/tts/preview", json={"text": "这条试听没有播出。"}).json()
            files = audio_files(settings)

            r = c.post(
                "/api/v1/broadcasts",
                json={"title": "村民大会", "asset_id": asset["asset_id"], "areas": [VILLAGE], "volume": 80},
            )
            assert r.status_code == 201, r.text
            broadcast = r.json()
            assert (broadcast["asset_id"], broadcast["text"], broadcast["status"]) == (
                asset["asset_id"], None, "scheduled",
            )  # fmt: skip
            occ = occurrence(c, broadcast["id"])
            assert occ["asset_id"] == asset["asset_id"]

            # the one signed play command carries the previewed file: its sha256, URL and length
            command = wait(lambda: plays.of(occ["id"]), 10, "the play command")[0]
            assert command["sha256"] == asset["sha256"]
            assert command["audio_url"].endswith(asset["url"])
            assert command["duration_s"] == asset["duration_ms"] / 1000
            assert command["volume"] == 80  # the speakers' volume, apart from the speech's loudness

            # the speakers downloaded it, found that sha256, and played it
            wait(
                lambda: {d["state"] for d in c.get(f"/api/v1/broadcasts/{broadcast['id']}/deliveries")
                         .json()["items"]} == {"played"},
                90, "both speakers to report played",
            )  # fmt: skip
            assert sp.sim.all_outcomes() == {d: [(occ["id"], "played")] for d in speakers}
            assert audio_files(settings) == files  # nothing was synthesised or assembled again

        # `cunxiang tts cleanup` counts the broadcast's asset as used: it stays, the unused preview goes
        env = {k: v for k, v in os.environ.items() if not k.startswith("CUNXIANG_")} | {
            "CUNXIANG_DATA_DIR": str(settings.data_dir),
            "CUNXIANG_DATABASE_URL": sqlite_url,
        }
        done = subprocess.run(
            [sys.executable, "-m", "api.cli", "tts", "cleanup", "--min-age-hours", "0"],
            env=env, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2],
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        left = {p.stem for p in audio_files(settings)}
        assert asset["sha256"] in left
        assert unused["sha256"] not in left
    finally:
        plays.close()


def test_preview_then_broadcast_with_the_same_settings_airs_the_previewed_asset(server):
    with server.client(server.login(*STAFF)) as staff, server.client(server.login(*ADMIN)) as admin:
        made = staff.post("/api/v1/tts/preview", json={"text": NOTICE, "speech": FULL})
        assert made.status_code == 200, made.text
        asset = made.json()
        assert asset["cached"] is False
        # the older flat form of the same settings is the same request
        flat = staff.post("/api/v1/tts/preview", json={"text": NOTICE, **FULL}).json()
        assert (flat["asset_id"], flat["cached"]) == (asset["asset_id"], True)
        files = audio_files(server.settings)

        r = admin.post(
            "/api/v1/broadcasts",
            json={"title": "村民大会", "text": NOTICE, "speech": FULL, "areas": [VILLAGE], "volume": 60},
        )
        assert r.status_code == 201, r.text
        broadcast = r.json()
        assert broadcast["asset_id"] == asset["asset_id"] and broadcast["volume"] == 60
        assert occurrence(admin, broadcast["id"])["asset_id"] == asset["asset_id"]
        assert audio_files(server.settings) == files  # no second synthesis

        # the first broadcast API's integer `rate` (percent) and `voice` mean the same settings
        slow = staff.post(
            "/api/v1/tts/preview", json={"text": NOTICE, "speech": {"voice": "cmn", "rate": "-20%"}}
        ).json()
        older = admin.post(
            "/api/v1/broadcasts",
            json={"title": "村民大会", "text": NOTICE, "voice": "cmn", "rate": -20, "areas": [VILLAGE]},
        )
        assert older.status_code == 201, older.text
        assert older.json()["asset_id"] == slow["asset_id"]
        # and the percent string a preview takes is accepted beside `text` as well
        same = admin.post(
            "/api/v1/broadcasts",
            json={"title": "村民大会", "text": NOTICE, "rate": "-20%", "voice": "cmn", "areas": [VILLAGE]},
        )
        assert same.status_code == 201, same.text
        assert same.json()["asset_id"] == slow["asset_id"]
        assert len(audio_files(server.settings)) == len(files) + 1  # the one new preview only


def test_broadcast_sources_and_speech_settings_are_refused_naming_the_field(server):
    good = {"title": "通知", "text": NOTICE, "areas": [VILLAGE]}
    with server.client(server.login(*ADMIN)) as c:
        asset_id = c.post("/api/v1/tts/preview", json={"text": "请注意。"}).json()["asset_id"]
        playlist_id = c.post(
            "/api/v1/playlists", json={"name": "节目", "items": [{"kind": "audio", "asset_id": asset_id}]}
        ).json()["id"]
        no_text = {k: v for k, v in good.items() if k != "text"}
        cases = [
            ({**good, "asset_id": asset_id}, ["body", "asset_id"], "only one of"),
            ({**no_text, "playlist_id": playlist_id, "asset_id": asset_id}, ["body", "asset_id"], "only one"),
            ({**good, "playlist_id": playlist_id}, ["body", "playlist_id"], "only one of"),
            (no_text, ["body", "text"], "asset_id"),
            ({**no_text, "asset_id": 999_999}, ["body", "asset_id"], "no audio asset 999999"),
            ({**no_text, "asset_id": asset_id, "speech": {"chime": True}}, ["body", "speech"], "with `text`"),
            ({**no_text, "playlist_id": playlist_id, "rate": -20}, ["body", "speech"], "with `text`"),
            ({**good, "speech": {"rate": "10%"}}, ["body", "speech", "rate"], "e.g. '-20%'"),
            ({**good, "speech": {"rate": -20}}, ["body", "speech", "rate"], "e.g. '-20%'"),
            ({**good, "rate": -80}, ["body", "speech", "rate"], "from -50% to +100%"),
            ({**good, "speech": {"voice": "zh-CN-NoSuch"}}, ["body", "speech", "voice"], "unknown voice"),
            ({**good, "speech": {"repeat": 9}}, ["body", "speech", "repeat"], "5"),
            ({**good, "speech": {"pitch": "+5"}}, ["body", "speech", "pitch"], "+5Hz"),
            ({**good, "speech": {"loud": True}}, ["body", "speech", "loud"], "xtra"),
            ({**good, "volume": "-20%"}, ["body", "volume"], "speech.volume"),
            ({**good, "volume": 101}, ["body", "volume"], "100"),
            ({**good, "rate": -20, "speech": {"voice": "cmn"}}, ["body"], "inside `speech`"),
        ]
        for body, loc, words in cases:
            r = c.post("/api/v1/broadcasts", json=body)
            assert r.status_code == 422, (body, r.text)
            errors = r.json()["detail"]
            assert any(e["loc"] == loc and words in e["msg"] for e in errors), (body, errors)
        assert c.get("/api/v1/broadcasts").json()["total"] == 0


def test_playlist_text_items_take_the_full_settings_and_reuse_the_preview(server):
    with server.client(server.login(*STAFF)) as c:
        asset = c.post("/api/v1/tts/preview", json={"text": NOTICE, "speech": FULL}).json()
        files = audio_files(server.settings)
        body = {
            "name": "午间",
            "items": [
                {"kind": "text", "text": NOTICE, "speech": FULL},
                {"kind": "text", "text": "请注意。", "voice": "cmn", "rate": -10},  # the older item form
            ],
            "gap_ms": 300,
        }
        created = c.post("/api/v1/playlists", json=body)
        assert created.status_code == 201, created.text
        items = created.json()["items"]
        assert items[0]["speech"] == FULL  # stored and shown as given: strings as a preview takes them
        assert items[1]["speech"] == {**DEFAULTS, "voice": "cmn", "rate": "-10%"}

        assembled = c.post(f"/api/v1/playlists/{created.json()['id']}/preview")
        assert assembled.status_code == 200, assembled.text
        # the first item is the previewed file (read twice, with both chimes): longer than one reading
        assert assembled.json()["duration_ms"] > asset["duration_ms"]
        # new files: the second item's speech and the assembled programme; the first was not made again
        assert len(audio_files(server.settings) - files) == 2

        # what GET shows can be sent back unchanged
        shown = c.get(f"/api/v1/playlists/{created.json()['id']}").json()["items"]
        again = [{k: v for k, v in i.items() if k != "position" and v is not None} for i in shown]
        patched = c.patch(f"/api/v1/playlists/{created.json()['id']}", json={"items": again})
        assert patched.status_code == 200, patched.text
        assert [i["speech"] for i in patched.json()["items"]] == [i["speech"] for i in shown]

        speech_loc = ["body", "items", 0, "speech"]
        cases = [
            ({"kind": "text", "text": NOTICE, "speech": {"rate": "10%"}}, [*speech_loc, "rate"]),
            ({"kind": "text", "text": NOTICE, "speech": {"repeat": 0}}, [*speech_loc, "repeat"]),
            ({"kind": "audio", "asset_id": asset["asset_id"], "speech": FULL}, ["body", "items", 0]),
        ]
        for item, loc in cases:
            r = c.post("/api/v1/playlists", json={"name": "坏", "items": [item]})
            assert r.status_code == 422, (item, r.text)
            assert r.json()["detail"][0]["loc"] == loc, r.json()
