"""`cunxiang agent`: run one speaker agent on a loudspeaker box (or a laptop with ffplay)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from dataclasses import replace
from pathlib import Path

from devices import protocol
from devices.agent.cache import AudioCache
from devices.agent.players import DEFAULT_PLAYER, make_player
from devices.agent.speaker import BEHAVIOURS, Speaker, parse_broker_url

logger = logging.getLogger(__name__)

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of the speaker agent."""
    parser = argparse.ArgumentParser(
        prog="cunxiang agent",
        description="Speaker agent: receives broadcast commands over MQTT, plays them, reports back.",
    )
    parser.add_argument("--device-id", required=True, help="this speaker's id (1-64 of A-Z a-z 0-9 _ . -)")
    parser.add_argument(
        "--area", required=True, help="12-digit area code of the village (or township/county)"
    )
    parser.add_argument("--broker", required=True, help="mqtt://[user:pass@]host:port (mqtts:// for TLS)")
    parser.add_argument(
        "--player",
        default=DEFAULT_PLAYER,
        help="command that plays a file (path appended, {volume} replaced by 0-100), or 'null' "
        f"to only pretend (default: {DEFAULT_PLAYER!r})",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=Path("cunxiang-audio-cache"), help="audio cache directory"
    )
    parser.add_argument("--username", help="MQTT user name (overrides the URL)")
    parser.add_argument("--password", help="MQTT password (overrides the URL)")
    parser.add_argument(
        "--behaviour", choices=BEHAVIOURS, default="ok", help="simulation: ok, fail or silent"
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the agent until SIGINT/SIGTERM; return the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    errors = []
    if not protocol.DEVICE_ID_RE.match(args.device_id):
        errors.append(f"--device-id must be 1-64 characters of A-Z a-z 0-9 _ . -, got {args.device_id!r}")
    if not protocol.AREA_CODE_RE.match(args.area):
        errors.append(f"--area must be a 12-digit area code such as 341225100201, got {args.area!r}")
    try:
        broker = parse_broker_url(args.broker)
    except ValueError as exc:
        errors.append(f"--broker: {exc}")
        broker = None
    try:
        player = make_player(args.player)
    except ValueError as exc:
        errors.append(f"--player: {exc}")
    if errors:
        for line in errors:
            print(f"cunxiang agent: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    assert broker is not None
    if args.username is not None:
        broker = replace(broker, username=args.username)
    if args.password is not None:
        broker = replace(broker, password=args.password)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.device_id, args.area, broker, args.cache_dir, player, args.behaviour))
    return 0


async def _serve(device_id, area, broker, cache_dir, player, behaviour) -> None:  # noqa: ANN001
    cache = AudioCache(cache_dir)
    speaker = Speaker(device_id, area, broker=broker, cache=cache, player=player, behaviour=behaviour)
    task = asyncio.create_task(speaker.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    logger.info("speaker %s in %s connecting to %s:%s", device_id, area, broker.host, broker.port)
    try:
        await task
    except asyncio.CancelledError:
        logger.info("speaker %s stopped", device_id)
    finally:
        await cache.aclose()


if __name__ == "__main__":
    sys.exit(main())
