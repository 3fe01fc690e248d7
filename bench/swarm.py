"""A swarm of lean speakers for load benchmarks: thousands of MQTT connections in one process.

Each speaker is its own paho client with its own connection, client id, last will and
subscriptions (its area chain and its device topic, as in docs/protocol.md); all of them are
driven by one selector loop instead of a thread each, so 10,000 fit in one process. They speak the
real wire protocol: play commands are parsed and their Ed25519 signatures verified with the
server's trusted keys (once per distinct command and topic: every speaker of a county receives the
same bytes), the audio is downloaded once and its sha256 checked, and each speaker reports
`received`, then `playing` at `start_at` and `played` when `duration_s` has passed, as a real
speaker with the null player does. Status is published (retained) every `status` interval.

What it leaves out, and why: the audio is fetched once per process rather than per speaker
(thousands of identical downloads would measure the HTTP server, not the report path), and no
audio is decoded. The speaker program itself (agent/, cunxiang_agent) is exercised by the test suite.
One process stands in for thousands of devices that each have a CPU of their own, so when they
all act at once (the end of a county-wide airing) it should only send: a `played` report is built
when its command arrives, and every message goes to its socket as soon as it is published (only a
socket that cannot take it all is watched for writing). Until 2026-11-26 the swarm built each report
at the end of playback and wrote none before all were queued: the first report left ~0.65 s after
the end of a 5,000-speaker airing, a delay that counted against the server.

Driven by a controller over stdin/stdout, one JSON object per line:

    {"cmd": "connect", "count": N}         -> {"ev": "connected", "total": .., "seconds": ..}
        ("subscribe": false: CONNECT/CONNACK only, no subscriptions and no online flag)
    {"cmd": "status", "interval": S}       -> statuses every S seconds, spread evenly
    {"cmd": "burst", "n": N, "topic": T}
        every one of the first N speakers publishes one QoS 1 played report (built as in a broadcast) to
        T.format(device_id=...) at once     -> {"ev": "burst", "start": .., "sent": .., "acked": .., "n": ..}
    {"cmd": "reports", "occurrences": [..], "states": [..]}
        every speaker reports each state of each occurrence at once -> {"ev": "burst", ...}
    {"cmd": "quit"}                        -> disconnects everyone and exits

and on its own: {"ev": "played", "occurrence": .., "end": .., "first": .., "last": .., "n": ..}
when the `played` reports of an occurrence have been handed to the sockets.

    python bench/swarm.py --broker mqtt://127.0.0.1:1883 --devices devices.json --keys trusted-keys.txt
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import itertools
import json
import os
import queue
import selectors
import socket
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cunxiang_shared import protocol  # noqa: E402
from cunxiang_shared.signing import SignatureError, Verifier, read_public_keys  # noqa: E402

# Connections opened but not yet subscribed. Mosquitto listens with a backlog of 100: more
# overflows it, and each dropped SYN costs the client a one-second retransmit.
CONNECTS_IN_FLIGHT = 80
KEEPALIVE_S = 120
# paho's keepalive bookkeeping (PINGREQ) for every client runs this often.
MISC_INTERVAL_S = 5.0
FIRMWARE = "bench-swarm"


# Linux: bind() picks no port, connect() does (from the full 4-tuple space). Without it, bind(port 0)
# searches the port table, which crawls (~6 ms a socket) while tens of thousands of ports from
# earlier runs sit in TIME_WAIT.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def connect_from(source: str, host: str, port: int, timeout: float | None = None) -> socket.socket:
    """A TCP connection to host:port from this loopback source address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.connect((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class _Client(mqtt.Client):
    """paho's client, connecting from a given loopback address with IP_BIND_ADDRESS_NO_PORT."""

    def _create_socket_connection(self) -> socket.socket:  # paho's hook for opening the socket
        return connect_from(self._bind_address, self._host, self._port, self._connect_timeout)


def source_address(i: int, net: int = 1) -> str:
    """Loopback source address of connection i: 127.net.x.y, one per connection.

    Tens of thousands of connections from one address exhaust its ephemeral ports, and every
    connect() slows while the kernel searches past the ports still in TIME_WAIT from an earlier
    run; a fresh address per connection (and a fresh `net` per swarm) never searches.
    """
    return f"127.{net}.{i // 250 % 256}.{2 + i % 250}"


@dataclass
class Speaker:
    device_id: str
    area_code: str
    client: mqtt.Client | None = None
    ready: bool = False
    seen: set[int] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)


class Swarm:
    """Speakers, their selector loop, timers and the controller's command queue."""

    def __init__(
        self, host: str, port: int, devices: list[tuple[str, str]], verifier: Verifier | None, net: int = 1
    ):
        self.host, self.port, self.net = host, port, net
        self.speakers = [Speaker(d, a) for d, a in devices]
        self.verifier = verifier
        self.sel = selectors.DefaultSelector()
        self.timers: list[tuple[float, int, object]] = []
        self._seq = itertools.count()
        self.commands: queue.Queue[dict] = queue.Queue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._opened = 0
        self._subscribe = True
        self.ready = 0
        self._connect_target = 0
        self._connect_started = 0.0
        self._parsed: dict[tuple[bytes, str], protocol.PlayCommand | None] = {}
        self._audio_ok: dict[str, bool] = {}
        self._played: dict[int, dict] = {}
        self._receivers: dict[int, int] = {}  # speakers that accepted each occurrence
        self._burst: dict | None = None
        self._status_interval = 0.0
        self.running = True
        self.errors: list[str] = []
        # Clients with something to send, written at the end of the loop turn (_flush_writes); only
        # a socket that cannot take it all is watched for EVENT_WRITE. Watching every socket that
        # has a packet queued cost two epoll_ctl calls and a trip through select per publish.
        self._writes: dict[mqtt.Client, socket.socket] = {}
        self._watched_for_write: set[socket.socket] = set()

    # ------------------------------------------------------------------ plumbing

    def emit(self, **event: object) -> None:
        try:
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:  # the controller is gone: nothing to tell
            self.running = False

    def at(self, when: float, fn, *args) -> None:
        """Call fn(*args) at time.time() >= when."""
        heapq.heappush(self.timers, (when, next(self._seq), (fn, args)))

    def _stdin(self) -> None:
        for line in sys.stdin:
            line = line.strip()
            if line:
                self.commands.put(json.loads(line))
                os.write(self._wake_w, b"x")
        self.commands.put({"cmd": "quit"})
        os.write(self._wake_w, b"x")

    # paho external-loop callbacks
    def _on_open(self, client, speaker, sock) -> None:
        self.sel.register(sock, selectors.EVENT_READ, client)

    def _on_close(self, client, speaker, sock) -> None:
        self._writes.pop(client, None)
        self._watched_for_write.discard(sock)
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass

    def _want_write(self, client, speaker, sock) -> None:
        self._writes[client] = sock

    def _done_write(self, client, speaker, sock) -> None:
        self._writes.pop(client, None)
        if sock in self._watched_for_write:
            self._watched_for_write.discard(sock)
            try:
                self.sel.modify(sock, selectors.EVENT_READ, client)
            except (KeyError, ValueError):
                pass

    def _flush_writes(self) -> None:
        """Write what each client queued this turn; watch only the sockets left with data."""
        while self._writes:
            writes, self._writes = self._writes, {}
            for client, sock in writes.items():
                client.loop_write()
                if client.want_write() and sock not in self._watched_for_write:
                    try:
                        self.sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, client)
                        self._watched_for_write.add(sock)
                    except (KeyError, ValueError):
                        pass

    # ------------------------------------------------------------------ MQTT behaviour

    def _new_client(self, i: int, speaker: Speaker) -> mqtt.Client:
        c = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=speaker.device_id,
            userdata=speaker,
            protocol=MQTTProtocolVersion.MQTTv311,
            clean_session=True,
        )
        c.max_inflight_messages_set(20)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_socket_open = self._on_open
        c.on_socket_close = self._on_close
        c.on_socket_register_write = self._want_write
        c.on_socket_unregister_write = self._done_write
        c.will_set(protocol.device_topic(speaker.device_id, "online"), protocol.OFFLINE, qos=1, retain=True)
        c.connect(self.host, self.port, keepalive=KEEPALIVE_S, bind_address=source_address(i, self.net))
        return c

    def _on_connect(self, client, speaker: Speaker, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.errors.append(f"{speaker.device_id}: CONNACK {reason_code}")
            return
        if not self._subscribe:
            self._ready(speaker)
            return
        topics = protocol.subscriptions(speaker.device_id, speaker.area_code)
        client.subscribe([(t, protocol.QOS_COMMAND) for t in topics])

    def _on_subscribe(self, client, speaker: Speaker, mid, reason_codes, properties) -> None:
        if any(rc.is_failure for rc in reason_codes):
            self.errors.append(f"{speaker.device_id}: SUBACK refused")
            return
        if not speaker.ready:
            client.publish(
                protocol.device_topic(speaker.device_id, "online"), protocol.ONLINE, qos=1, retain=True
            )
            self._ready(speaker)

    def _ready(self, speaker: Speaker) -> None:
        if not speaker.ready:
            speaker.ready = True
            self.ready += 1
            if self.ready == self._connect_target:
                self.emit(
                    ev="connected", total=self.ready, seconds=time.monotonic() - self._connect_started,
                    errors=self.errors[:5],
                )  # fmt: skip

    def _on_message(self, client, speaker: Speaker, message: mqtt.MQTTMessage) -> None:
        key = (message.payload, message.topic)
        if key not in self._parsed:
            self._parsed[key] = self._accept(message.topic, message.payload)
        command = self._parsed[key]
        if command is None or command.occurrence_id in speaker.seen:
            return
        speaker.seen.add(command.occurrence_id)
        self._receivers[command.occurrence_id] = self._receivers.get(command.occurrence_id, 0) + 1
        self._report(speaker, command.occurrence_id, "received")
        start = command.start_at.timestamp()
        end = start + command.duration_s
        self.at(start, self._report, speaker, command.occurrence_id, "playing")
        # The played report is built now: at `end` every simulated speaker sends at once, and this
        # one process, standing in for thousands of devices with a CPU each, should then only send.
        played = protocol.encode(
            protocol.Report(
                device_id=speaker.device_id, occurrence_id=command.occurrence_id, state="played",
                at=datetime.fromtimestamp(end, UTC), seconds_played=command.duration_s,
            )
        )  # fmt: skip
        self.at(end, self._report_played, speaker, command.occurrence_id, played, end)

    def _accept(self, topic: str, payload: bytes) -> protocol.PlayCommand | None:
        try:
            data = protocol.load_command(payload)
            command = protocol.command_from(data)
            if self.verifier is not None:
                self.verifier.verify(data, topic)
        except (protocol.ProtocolError, SignatureError) as exc:
            self.errors.append(f"dropped command on {topic}: {exc}")
            return None
        if not isinstance(command, protocol.PlayCommand):
            return None
        if command.sha256 not in self._audio_ok:
            self._audio_ok[command.sha256] = self._download(command)
        return command if self._audio_ok[command.sha256] else None

    def _download(self, command: protocol.PlayCommand) -> bool:
        try:
            with urllib.request.urlopen(command.audio_url, timeout=10) as response:
                body = response.read()
        except OSError as exc:
            self.errors.append(f"download {command.audio_url}: {exc}")
            return False
        if hashlib.sha256(body).hexdigest() != command.sha256:
            self.errors.append(f"download {command.audio_url}: sha256 mismatch")
            return False
        return True

    def _report(self, speaker: Speaker, occurrence_id: int, state: str, **extra: object) -> None:
        report = protocol.Report(
            device_id=speaker.device_id, occurrence_id=occurrence_id, state=state, **extra
        )
        assert speaker.client is not None
        speaker.client.publish(
            protocol.device_topic(speaker.device_id, "report"), protocol.encode(report), qos=1
        )

    def _report_played(self, speaker: Speaker, occurrence_id: int, payload: bytes, end: float) -> None:
        first = time.time()
        assert speaker.client is not None
        speaker.client.publish(protocol.device_topic(speaker.device_id, "report"), payload, qos=1)
        self._flush_writes()  # handed to the socket now, so `last` below says when it was
        entry = self._played.setdefault(occurrence_id, {"n": 0, "first": first, "end": end})
        entry["n"] += 1
        entry["last"] = time.time()
        if entry["n"] == self._receivers[occurrence_id]:
            self.emit(ev="played", occurrence=occurrence_id, **entry)

    def _on_publish(self, client, speaker: Speaker, mid, reason_code, properties) -> None:
        burst = self._burst
        if burst is not None and (speaker.device_id, mid) in burst["mids"]:
            burst["mids"].discard((speaker.device_id, mid))
            if not burst["mids"]:
                self.emit(
                    ev="burst", n=burst["n"], start=burst["start"], sent=burst.get("sent"), acked=time.time()
                )
                self._burst = None

    def _status(self, speaker: Speaker) -> None:
        if self._status_interval <= 0 or not self.running:
            return
        if speaker.client is not None and speaker.ready:
            status = protocol.Status(
                device_id=speaker.device_id, firmware=FIRMWARE, volume=80,
                uptime_s=time.monotonic() - speaker.started, clock_offset_s=0.0, pending=0,
                queued_reports=0,
            )  # fmt: skip
            speaker.client.publish(
                protocol.device_topic(speaker.device_id, "status"),
                protocol.encode(status),
                qos=1,
                retain=True,
            )
        self.at(time.time() + self._status_interval, self._status, speaker)

    # ------------------------------------------------------------------ controller commands

    def _command(self, cmd: dict) -> None:
        name = cmd["cmd"]
        if name == "connect":
            first = self._connect_target
            self._connect_target = min(len(self.speakers), first + int(cmd["count"]))
            # without subscriptions (a baseline): ready at CONNACK, no online flag, no will needed
            self._subscribe = bool(cmd.get("subscribe", True))
            self._connect_started = time.monotonic()
            self._pending_connects = iter(range(first, self._connect_target))
        elif name == "status":
            self._status_interval = float(cmd["interval"])
            live = [s for s in self.speakers if s.ready]
            now = time.time()
            for k, speaker in enumerate(live):
                self.at(now + self._status_interval * k / max(1, len(live)), self._status, speaker)
        elif name == "burst":
            # Each message is a played report built (beforehand) as `_on_message` builds one, and
            # sent as `_report_played` sends it: the sender's work in the burst is the broadcast's.
            n = min(int(cmd["n"]), self.ready)
            mids: set[tuple[str, int]] = set()
            at = datetime.now(UTC)
            burst = [
                (
                    speaker,
                    cmd["topic"].format(device_id=speaker.device_id),
                    protocol.encode(
                        protocol.Report(
                            device_id=speaker.device_id, occurrence_id=1, state="played", at=at,
                            seconds_played=3.2,
                        )
                    ),
                )
                for speaker in [s for s in self.speakers if s.ready][:n]
            ]  # fmt: skip
            self._burst = {"n": n, "start": time.time(), "mids": mids}
            for speaker, topic, payload in burst:
                assert speaker.client is not None
                info = speaker.client.publish(topic, payload, qos=1)
                mids.add((speaker.device_id, info.mid))
                self._flush_writes()  # on the wire at once, as each `played` report of a broadcast
            self._burst["sent"] = time.time()
        elif name == "reports":
            # every ready speaker reports each state of each occurrence, all at once
            mids = set()
            live = [s for s in self.speakers if s.ready]
            self._burst = {"n": 0, "start": time.time(), "mids": mids}
            for occurrence_id in cmd["occurrences"]:
                for state in cmd.get("states", ["received", "playing", "played"]):
                    for speaker in live:
                        assert speaker.client is not None
                        extra = {"seconds_played": 3.0} if state == "played" else {}
                        report = protocol.Report(
                            device_id=speaker.device_id, occurrence_id=occurrence_id, state=state, **extra
                        )
                        info = speaker.client.publish(
                            protocol.device_topic(speaker.device_id, "report"), protocol.encode(report), qos=1
                        )
                        mids.add((speaker.device_id, info.mid))
            self._burst["n"] = len(mids)
        elif name == "quit":
            self.running = False

    def _connect_some(self) -> None:
        pending = getattr(self, "_pending_connects", None)
        if pending is None:
            return
        while self._opened - self.ready < CONNECTS_IN_FLIGHT:
            i = next(pending, None)
            if i is None:
                self._pending_connects = None
                return
            speaker = self.speakers[i]
            try:
                speaker.client = self._new_client(i, speaker)
            except OSError as exc:
                self.errors.append(f"{speaker.device_id}: connect: {exc}")
            self._opened += 1

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        threading.Thread(target=self._stdin, daemon=True).start()
        next_misc = time.monotonic() + MISC_INTERVAL_S
        while self.running:
            now = time.time()
            while self.timers and self.timers[0][0] <= now:
                _, _, (fn, args) = heapq.heappop(self.timers)
                fn(*args)
            self._flush_writes()
            timeout = 0.05
            if self.timers:
                timeout = max(0.0, min(timeout, self.timers[0][0] - time.time()))
            for key, events in self.sel.select(timeout):
                client = key.data
                if client is None:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                    while not self.commands.empty():
                        self._command(self.commands.get())
                    continue
                if events & selectors.EVENT_READ:
                    client.loop_read()
                if events & selectors.EVENT_WRITE:
                    client.loop_write()
            self._connect_some()
            if time.monotonic() >= next_misc:
                next_misc = time.monotonic() + MISC_INTERVAL_S
                for speaker in self.speakers:
                    if speaker.client is not None:
                        speaker.client.loop_misc()
        for speaker in self.speakers:
            if speaker.client is not None:
                speaker.client.disconnect()
        self.emit(ev="bye", errors=self.errors[:10], error_count=len(self.errors))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--broker", required=True, help="mqtt://host:port")
    parser.add_argument("--devices", required=True, help="JSON file: [[device_id, area_code], ...]")
    parser.add_argument("--keys", help="trusted-keys file of the server (no file: signatures not checked)")
    parser.add_argument("--net", type=int, default=1, help="source addresses 127.NET.x.y (1-254)")
    args = parser.parse_args(argv)
    host, port, _user, _password = _split(args.broker)
    devices = [tuple(x) for x in json.loads(Path(args.devices).read_text())]
    verifier = Verifier(read_public_keys(Path(args.keys).read_text().splitlines())) if args.keys else None
    Swarm(host, port, devices, verifier, args.net).run()
    return 0


def _split(url: str) -> tuple[str, int, str | None, str | None]:
    from devices.transport import parse_broker_url

    return parse_broker_url(url)


if __name__ == "__main__":
    sys.exit(main())
