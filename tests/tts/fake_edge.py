"""A local stand-in for the Edge read-aloud service, speaking its real websocket exchange.

The real edge-tts client is pointed at it (``edge_tts.communicate.WSS_URL``,
``edge_tts.voices.VOICE_LIST``). For each request it receives ``Path:speech.config`` and
``Path:ssml`` text frames and answers like the service: a ``Path:turn.start`` text frame, binary
audio frames (2-byte big-endian header length, header lines ending ``\\r\\n`` with
``Path:audio``, then MP3 bytes), and a ``Path:turn.end`` text frame. The MP3 is real: the SSML's
text spoken by espeak-ng and encoded by ffmpeg as the service does (24 kHz, 48 kbit/s, mono).

Failure modes, set on the instance between requests:
- ``refuse = [503, 429]``: the next handshakes are refused with these statuses, one per attempt;
- ``refuse_always = 403``: every handshake is refused;
- ``stall_after_frames = 2``: the stream stops after that many audio frames and never ends.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

FRAME_BYTES = 4096

VOICE_LIST = [
    {"ShortName": "zh-CN-XiaoxiaoNeural", "Gender": "Female", "Locale": "zh-CN"},
    {"ShortName": "zh-CN-YunyangNeural", "Gender": "Male", "Locale": "zh-CN"},
    {"ShortName": "zh-CN-liaoning-XiaobeiNeural", "Gender": "Female", "Locale": "zh-CN-liaoning"},
    {"ShortName": "zh-CN-shaanxi-XiaoniNeural", "Gender": "Female", "Locale": "zh-CN-shaanxi"},
    {"ShortName": "zh-HK-HiuGaaiNeural", "Gender": "Female", "Locale": "zh-HK"},
    {"ShortName": "zh-CN-sichuan-YunxiNeural", "Gender": "Male", "Locale": "zh-CN-sichuan"},
    {"ShortName": "en-US-AriaNeural", "Gender": "Female", "Locale": "en-US"},
]


@dataclass
class SpeechRequest:
    voice: str
    rate: str
    pitch: str
    volume: str
    text: str
    output_format: str


def _header_block(request_id: str, content_type: str, path: str) -> str:
    return f"X-RequestId:{request_id}\r\nContent-Type:{content_type}\r\nPath:{path}\r\n"


def speak_mp3(text: str) -> bytes:
    """Real MP3 bytes of text (espeak-ng cmn, encoded like the service's output format)."""
    with tempfile.TemporaryDirectory() as work:
        wav = Path(work) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", "cmn", "--stdin", "-w", str(wav)], input=text.encode(), check=True)
        encode = ["ffmpeg", "-v", "error", "-i", str(wav), "-ar", "24000", "-ac", "1", "-b:a", "48k"]
        return subprocess.run([*encode, "-f", "mp3", "-"], capture_output=True, check=True).stdout


class FakeEdge:
    def __init__(self) -> None:
        self.refuse: list[int] = []
        self.refuse_always: int | None = None
        self.stall_after_frames: int | None = None
        self.requests: list[SpeechRequest] = []
        self.handshakes = 0
        self.voice_list_requests = 0
        self._mp3: dict[str, bytes] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-edge", daemon=True)
        self._server = None
        self.port = 0

    @property
    def wss_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/consumer/speech/synthesize/readaloud/edge/v1?TrustedClientToken=t"

    @property
    def voices_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/consumer/speech/synthesize/readaloud/voices/list?trustedclienttoken=t"

    def __enter__(self) -> FakeEdge:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._process_request, max_size=None
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if "/voices/list" in request.path:
            self.voice_list_requests += 1
            response = connection.respond(HTTPStatus.OK, json.dumps(VOICE_LIST))
            response.headers["Content-Type"] = "application/json"
            return response
        self.handshakes += 1
        status = self.refuse.pop(0) if self.refuse else self.refuse_always
        if status is not None:
            return connection.respond(status, f"fake edge refuses: {status}")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        config = await ws.recv()
        ssml = await ws.recv()
        assert isinstance(config, str) and "Path:speech.config" in config, config
        assert isinstance(ssml, str) and "Path:ssml" in ssml, ssml
        request_id = re.search(r"X-RequestId:(\w+)", ssml).group(1)
        request = self._parse(config, ssml)
        self.requests.append(request)
        if request.text not in self._mp3:
            self._mp3[request.text] = await asyncio.to_thread(speak_mp3, request.text)
        mp3 = self._mp3[request.text]

        await ws.send(_header_block(request_id, "application/json; charset=utf-8", "turn.start") + "\r\n{}")
        head = _header_block(request_id, "audio/mpeg", "audio").encode()
        for n, offset in enumerate(range(0, len(mp3), FRAME_BYTES)):
            if self.stall_after_frames is not None and n >= self.stall_after_frames:
                await ws.wait_closed()  # stalls until the client gives up
                return
            await ws.send(len(head).to_bytes(2, "big") + head + mp3[offset : offset + FRAME_BYTES])
        await ws.send(_header_block(request_id, "application/json; charset=utf-8", "turn.end") + "\r\n{}")
        await ws.wait_closed()

    @staticmethod
    def _parse(config: str, ssml: str) -> SpeechRequest:
        def attr(name: str) -> str:
            found = re.search(rf"{name}='([^']*)'", ssml)
            return found.group(1) if found else ""

        body = re.search(r"<prosody[^>]*>(.*)</prosody>", ssml, re.S)
        output = re.search(r'"outputFormat":"([^"]+)"', config)
        return SpeechRequest(
            voice=re.search(r"<voice name='([^']*)'>", ssml).group(1),
            rate=attr("rate"),
            pitch=attr("pitch"),
            volume=attr("volume"),
            text=html.unescape(body.group(1)) if body else "",
            output_format=output.group(1) if output else "",
        )
