"""`cunxiang-agent` (or `cunxiang agent`): run one speaker on a loudspeaker box (or a laptop with ffplay)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from dataclasses import replace
from pathlib import Path

from cunxiang_agent.cache import AudioCache
from cunxiang_agent.players import DEFAULT_PLAYER, make_player
from cunxiang_agent.speaker import BEHAVIOURS, Speaker
from cunxiang_shared import areas, protocol
from cunxiang_shared.broker import parse_broker_url
from cunxiang_shared.signing import read_public_keys

logger = logging.getLogger(__name__)

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of the speaker agent."""
    parser = argparse.ArgumentParser(
        prog="cunxiang-agent",
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
    parser.add_argument(
        "--cache-max-mb",
        type=float,
        default=512,
        help="audio cache size limit; least recently used files go first (default 512)",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        help="pending airings and unsent reports, kept across restarts (default CACHE_DIR/state.json)",
    )
    parser.add_argument(
        "--server-keys",
        type=Path,
        help="file of trusted server public keys, one `ed25519:...` per line "
        "(`cunxiang keys show` prints it); commands not signed by one of them are dropped",
    )
    parser.add_argument(
        "--insecure-accept-unsigned",
        action="store_true",
        help="do not check command signatures (a demo broker only; never in the field)",
    )
    parser.add_argument("--username", help="MQTT user name (overrides the URL)")
    parser.add_argument("--password", help="MQTT password (overrides the URL)")
    parser.add_argument(
        "--password-file", type=Path, help="read the MQTT password from this file (first line)"
    )
    parser.add_argument("--ca-file", help="TLS: CA certificate(s) of the broker (mqtts://)")
    parser.add_argument("--cert-file", help="TLS: client certificate, when the broker requires one")
    parser.add_argument("--key-file", help="TLS: the client certificate's private key")
    parser.add_argument(
        "--behaviour",
        choices=BEHAVIOURS,
        default="ok",
        help="simulation: ok; fail (every playback and test tone fails); silent (hung: connected but "
        "ignores commands, sends no status or report); flaky (the link drops every ~20 s for 8 s); "
        "drift (the clock runs 2 minutes fast). Default ok",
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
    try:
        areas.validate(args.area)
    except areas.InvalidAreaCode as exc:
        errors.append(f"--area must be a 12-digit area code such as 341225100201: {exc}")
    try:
        broker = parse_broker_url(args.broker)
    except ValueError as exc:
        errors.append(f"--broker: {exc}")
        broker = None
    try:
        player = make_player(args.player)
    except ValueError as exc:
        errors.append(f"--player: {exc}")
    keys = []
    if args.server_keys is not None:
        try:
            keys = read_public_keys(args.server_keys.read_text().splitlines())
            if not keys:
                errors.append(f"--server-keys: no key in {args.server_keys}")
        except (OSError, ValueError) as exc:
            errors.append(f"--server-keys: {exc}")
    elif not args.insecure_accept_unsigned:
        errors.append("--server-keys FILE is required (or --insecure-accept-unsigned on a demo broker)")
    password = args.password
    if args.password_file is not None:
        try:
            password = args.password_file.read_text().splitlines()[0].strip()
        except (OSError, IndexError) as exc:
            errors.append(f"--password-file: cannot read a password from {args.password_file}: {exc}")
    if errors:
        for line in errors:
            print(f"cunxiang-agent: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    assert broker is not None
    if args.username is not None:
        broker = replace(broker, username=args.username)
    if password is not None:
        broker = replace(broker, password=password)
    if args.ca_file or args.cert_file or args.key_file:
        broker = replace(broker, ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file)
    if args.insecure_accept_unsigned and not keys:
        logger.warning("command signatures are NOT checked (--insecure-accept-unsigned)")

    async def serve() -> None:
        cache = AudioCache(args.cache_dir, max_bytes=int(args.cache_max_mb * 1024 * 1024))
        speaker = Speaker(
            args.device_id,
            args.area,
            broker=broker,
            cache=cache,
            player=player,
            behaviour=args.behaviour,
            trusted_keys=keys,
            require_signatures=bool(keys) or not args.insecure_accept_unsigned,
            state_file=args.state_file or args.cache_dir / "state.json",
        )
        await _serve(speaker, cache)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


async def _serve(speaker: Speaker, cache: AudioCache) -> None:
    device_id, area, broker = speaker.device_id, speaker.area_code, speaker.broker
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
