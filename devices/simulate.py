"""Many simulated speakers in one process (null player), for demos, load tests and end-to-end tests.

No database here: whoever knows the devices builds SpeakerSpecs and calls run_speakers or Simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cunxiang_agent.cache import AudioCache
from cunxiang_agent.players import NullPlayer
from cunxiang_agent.speaker import BEHAVIOURS, Behaviour, Speaker, cancel_and_wait
from cunxiang_shared.broker import parse_broker_url

logger = logging.getLogger(__name__)

# Speakers connecting at the same time; amqtt handles a few dozen parallel handshakes well.
CONNECT_BATCH = 50
# How long one batch may take to connect before the next batch starts anyway (the rest keep retrying).
BATCH_READY_TIMEOUT_S = 10.0
# How long run_speakers waits for everyone before it reports who is missing (and keeps running).
READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class SpeakerSpec:
    """One simulated speaker: its id, its area and how it behaves (speaker.BEHAVIOURS)."""

    device_id: str
    area_code: str
    behaviour: Behaviour = "ok"
    # its MQTT password (the user name is the device id); None: connect with the broker URL's account
    password: str | None = None


def pick_behaviours(
    device_ids: Iterable[str],
    fail_rate: float,
    silent_rate: float = 0.0,
    seed: int = 0,
    *,
    flaky_rate: float = 0.0,
    drift_rate: float = 0.0,
) -> dict[str, Behaviour]:
    """Deterministically give round(n * rate) devices each misbehaviour (fail, silent, flaky, drift)."""
    rates = {"fail": fail_rate, "silent": silent_rate, "flaky": flaky_rate, "drift": drift_rate}
    if not (all(0 <= r <= 1 for r in rates.values()) and sum(rates.values()) <= 1):
        raise ValueError(
            "rates must be in [0, 1] and sum to at most 1: "
            + ", ".join(f"{name}={rate}" for name, rate in rates.items())
        )
    ids = sorted(set(device_ids))
    random.Random(seed).shuffle(ids)
    result: dict[str, Behaviour] = {}
    start = 0
    for name, rate in rates.items():
        count = round(len(ids) * rate)
        for device_id in ids[start : start + count]:
            result[device_id] = name  # type: ignore[assignment]
        start += count
    for device_id in ids[start:]:
        result[device_id] = "ok"
    return result


class Simulator:
    """Run simulated speakers for the duration of an ``async with`` block."""

    def __init__(
        self,
        specs: Sequence[SpeakerSpec],
        broker_url: str,
        cache_dir: Path,
        *,
        batch_size: int = CONNECT_BATCH,
        trusted_keys: Sequence[Ed25519PublicKey] = (),
        state_dir: Path | None = None,
    ) -> None:
        ids = [spec.device_id for spec in specs]
        if len(set(ids)) != len(ids):
            raise ValueError("device ids must be unique (they are the MQTT client ids)")
        for spec in specs:
            if spec.behaviour not in BEHAVIOURS:
                raise ValueError(
                    f"{spec.device_id}: behaviour must be one of {BEHAVIOURS}, got {spec.behaviour!r}"
                )
        self.specs = list(specs)
        self.broker = parse_broker_url(broker_url)
        self.cache_dir = Path(cache_dir)
        self.batch_size = max(1, batch_size)
        # Without keys the speakers cannot check signatures: acceptable on a demo broker only.
        self.trusted_keys = list(trusted_keys)
        self.state_dir = state_dir
        self.speakers: dict[str, Speaker] = {}
        self.connect_seconds: float | None = None  # time until every speaker was ready, once known
        self._cache: AudioCache | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started = 0.0
        self._finished = asyncio.Event()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Create every speaker and connect them in batches of batch_size."""
        self._cache = AudioCache(self.cache_dir)
        player = NullPlayer()
        self._started = time.monotonic()
        if not self.trusted_keys:
            logger.warning("simulated speakers were given no server key: command signatures NOT checked")
        for spec in self.specs:
            self.speakers[spec.device_id] = Speaker(
                spec.device_id,
                spec.area_code,
                broker=(
                    replace(self.broker, username=spec.device_id, password=spec.password)
                    if spec.password is not None
                    else self.broker
                ),
                cache=self._cache,
                player=player,
                behaviour=spec.behaviour,
                trusted_keys=self.trusted_keys,
                require_signatures=bool(self.trusted_keys),
                state_file=self.state_dir / f"{spec.device_id}.json" if self.state_dir else None,
            )
            self.speakers[spec.device_id].on_final = self._on_final
        speakers = list(self.speakers.values())
        for first in range(0, len(speakers), self.batch_size):
            batch = speakers[first : first + self.batch_size]
            self._tasks += [asyncio.create_task(s.run(), name=f"speaker:{s.device_id}") for s in batch]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(BATCH_READY_TIMEOUT_S):
                    await asyncio.gather(*(s.ready.wait() for s in batch))
        logger.info("started %s simulated speakers, %s ready", len(speakers), self.ready_count())

    def ready_count(self) -> int:
        """How many speakers are connected and subscribed right now."""
        return sum(1 for s in self.speakers.values() if s.ready.is_set())

    async def wait_ready(self, timeout: float) -> float:  # noqa: ASYNC109 - part of the public API
        """Wait until every speaker is connected and subscribed; return seconds since start()."""
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(s.ready.wait() for s in self.speakers.values()))
        except TimeoutError:
            missing = [d for d, s in self.speakers.items() if not s.ready.is_set()]
            raise TimeoutError(
                f"{len(missing)} of {len(self.speakers)} speakers not connected after {timeout} s, "
                f"e.g. {missing[:5]}"
            ) from None
        if self.connect_seconds is None:
            self.connect_seconds = time.monotonic() - self._started
        return self.connect_seconds

    def _on_final(self, report: object) -> None:
        self._finished.set()

    def finished(self, occurrence_id: int) -> int:
        """How many speakers have reached a final state for this occurrence."""
        return sum(1 for s in self.speakers.values() if occurrence_id in s.outcomes)

    async def wait_finished(self, occurrence_id: int, count: int, timeout: float) -> None:  # noqa: ASYNC109
        """Wait until `count` speakers reached a final state (played, failed, ...) for this occurrence."""
        try:
            async with asyncio.timeout(timeout):
                while self.finished(occurrence_id) < count:
                    self._finished.clear()
                    await self._finished.wait()
        except TimeoutError:
            raise TimeoutError(
                f"only {self.finished(occurrence_id)} of {count} speakers finished occurrence "
                f"{occurrence_id} within {timeout} s"
            ) from None

    def outcomes(self, device_id: str) -> list[tuple[int, str]]:
        """(occurrence id, final state) for everything this speaker finished, in order."""
        return self.speakers[device_id].final_states()

    def all_outcomes(self) -> dict[str, list[tuple[int, str]]]:
        """Final states of every speaker, by device id."""
        return {device_id: s.final_states() for device_id, s in self.speakers.items()}

    async def stop(self) -> None:
        """Disconnect every speaker (each says online=0 first) and close the cache's HTTP client."""
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        if self._cache is not None:
            await self._cache.aclose()
            self._cache = None


async def run_speakers(
    specs: Sequence[SpeakerSpec],
    broker_url: str,
    cache_dir: Path,
    stop: asyncio.Event | None = None,
    trusted_keys: Sequence[Ed25519PublicKey] = (),
) -> None:
    """Run the speakers until stop is set (or forever); log how long connecting took."""
    async with Simulator(specs, broker_url, cache_dir, trusted_keys=trusted_keys) as sim:
        try:
            seconds = await sim.wait_ready(READY_TIMEOUT_S)
            logger.info("%s simulated speakers connected in %.1f s", len(specs), seconds)
        except TimeoutError as exc:
            logger.warning("%s; they keep retrying", exc)
        if stop is None:
            await asyncio.Event().wait()
        else:
            await stop.wait()
