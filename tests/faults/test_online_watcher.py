"""A server whose reports are ingested by separate workers still learns, on a real broker, which
speakers came online (to re-send them what is still due, docs/protocol.md §1)."""

from __future__ import annotations

import threading
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from cunxiang_shared import protocol
from cunxiang_shared.broker import parse_broker_url
from devices.ingest import OnlineWatcher
from devices.transport import MqttLink
from tests.fixtures_mqtt import clear_retained

# Seconds the watcher gets to hand over the speakers (it batches for ingest.ONLINE_BATCH_S).
HANDOVER_TIMEOUT_S = 5.0


def test_the_watcher_hands_over_every_speaker_whose_flag_says_online(broker_url: str) -> None:
    import asyncio

    tag = uuid.uuid4().hex[:6]
    up, down = [f"w-{tag}-{i}" for i in range(3)], f"w-{tag}-down"
    seen: list[str] = []
    got_all = threading.Event()

    def on_online(device_ids: list[str]) -> None:
        seen.extend(device_ids)
        if set(up) <= set(seen):
            got_all.set()

    link = MqttLink(broker_url, client_id=f"watcher-{tag}")
    watcher = OnlineWatcher(link=link, on_online=on_online)
    watcher.start()  # before connecting, as the server does
    link.connect()
    address = parse_broker_url(broker_url)
    speaker = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"sp-{tag}", protocol=MQTTProtocolVersion.MQTTv311
    )
    speaker.connect(address.host, address.port)
    speaker.loop_start()
    try:
        for device_id in [*up, down]:
            flag = protocol.OFFLINE if device_id == down else protocol.ONLINE
            speaker.publish(protocol.device_topic(device_id, "online"), flag, qos=1).wait_for_publish(5)
        assert got_all.wait(HANDOVER_TIMEOUT_S), seen
        assert sorted(set(seen)) == sorted(up)  # never the one that went down
    finally:
        speaker.loop_stop()
        speaker.disconnect()
        watcher.stop()
        link.close()
        asyncio.run(clear_retained(broker_url, [*up, down]))
