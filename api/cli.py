"""The `cunxiang` command: serve, agent, simulate, ingest, regions, users, db, tts, keys, mosquitto."""

from __future__ import annotations

import argparse
import asyncio
import errno
import getpass
import logging
import os
import signal
import socket
import sys
from pathlib import Path

log = logging.getLogger("cunxiang")

DEMO_SPEAKERS_PER_VILLAGE = 2
# The group Debian's Mosquitto package runs the broker as (it drops root for user `mosquitto`).
MOSQUITTO_GROUP = "mosquitto"


def _settings(args: argparse.Namespace, **extra):
    from core.settings import Settings

    overrides = dict(extra)
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    return Settings(**overrides)


def _session_factory(settings):
    from api import migrate
    from core.db import make_engine, make_session_factory

    migrate.upgrade(settings.database_url)
    return make_session_factory(make_engine(settings.database_url))


# ---------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    extra = {}
    if "CUNXIANG_PUBLIC_URL" not in os.environ:
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        extra["public_url"] = f"http://{host}:{args.port}"
    if args.open_broker or args.open_broker_any_host:
        extra["mqtt"] = {"open_broker": True, "open_broker_any_host": args.open_broker_any_host}
    settings = _settings(args, **extra)
    # Checked before anything is created or printed: a demo password printed just before a failed
    # start scrolls away with the traceback, and the next run does not show it again.
    problem = _listen_problem(settings, args.host, args.port)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    import uvicorn

    from api.app import create_app
    from core import users

    per_village = 0
    if args.demo:
        per_village = args.speakers_per_village
        try:
            _load_demo(settings, per_village)
        except users.UserError as exc:  # CUNXIANG_ADMIN_PASSWORD too short
            print(f"error: CUNXIANG_ADMIN_PASSWORD: {exc}", file=sys.stderr)
            return 2
    if not settings.mqtt.url and settings.mqtt.open_broker:
        print(
            f"warning: the embedded MQTT broker on {settings.mqtt.host}:{settings.mqtt.port} is OPEN: "
            "anyone who reaches it can publish speaker reports (demo only)",
            file=sys.stderr,
        )
    app = create_app(settings, simulate_per_village=per_village)
    # proxy_headers off: uvicorn would otherwise believe X-Forwarded-* from 127.0.0.1 (or
    # FORWARDED_ALLOW_IPS); the app believes only CUNXIANG_HTTP_TRUSTED_PROXIES.
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, proxy_headers=False)
    return 0


def _bind_error(host: str, port: int) -> OSError | None:
    """None if a server could listen on host:port now, else the error binding it gave."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn and amqtt choose
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Both listen with SO_REUSEADDR, so a port with connections in TIME_WAIT is not "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc
    return None


def _listen_problem(settings, host: str, port: int) -> str | None:
    """Why `serve` could not listen on its HTTP port or its embedded broker's port, or None."""
    if not settings.mqtt.url:
        from devices.broker import is_loopback

        mhost, mport = settings.mqtt.host, settings.mqtt.port
        if settings.mqtt.open_broker and not settings.mqtt.open_broker_any_host and not is_loopback(mhost):
            return (
                f"error: an open embedded MQTT broker (--open-broker) listens on loopback only, not on "
                f"{mhost}: anyone who reaches it could publish speaker reports. Drop --open-broker (the "
                f"broker then requires accounts), set CUNXIANG_MQTT_HOST=127.0.0.1, or allow it explicitly "
                f"with --open-broker-any-host. Nothing was started or changed."
            )
        exc = _bind_error(mhost, mport)
        if exc is not None and exc.errno == errno.EADDRINUSE:
            there = "127.0.0.1" if mhost in ("0.0.0.0", "::") else mhost
            mosquitto = (
                "; installing the mosquitto package, as ./scripts/test does, starts one on this port"
                if mport == 1883
                else ""
            )
            return (
                f"error: cannot start the embedded MQTT broker: port {mport} on {mhost} is already in use "
                f"by another program (cunxiang cannot tell which; `ss -ltnp 'sport = :{mport}'` shows "
                f"it{mosquitto}). If it is an MQTT broker such as Mosquitto, set "
                f"CUNXIANG_MQTT_URL=mqtt://{there}:{mport} to use it instead of the embedded one; or set "
                f"CUNXIANG_MQTT_PORT={mport + 1 if mport < 65535 else 1884} to run the embedded broker on "
                f"another port. Nothing was started or changed."
            )
        if exc is not None:
            return (
                f"error: cannot start the embedded MQTT broker on {mhost}:{mport}: {exc} "
                f"(CUNXIANG_MQTT_HOST / CUNXIANG_MQTT_PORT). Nothing was started or changed."
            )
    exc = _bind_error(host, port)
    if exc is not None and exc.errno == errno.EADDRINUSE:
        return (
            f"error: cannot serve HTTP: port {port} on {host} is already in use by another program "
            f"(perhaps another `cunxiang serve`; `ss -ltnp 'sport = :{port}'` shows it). "
            f"Pick another port with --port. Nothing was started or changed."
        )
    if exc is not None:
        return f"error: cannot serve HTTP on {host}:{port}: {exc}. Nothing was started or changed."
    return None


def _load_demo(settings, per_village: int) -> None:
    from core import flows as core_flows
    from devices import flows as device_flows

    factory = _session_factory(settings)
    with factory() as session:
        created, admin = core_flows.load_demo(session=session, admin_password=settings.admin_password)
        if created:
            print(f"demo county loaded: {created} areas")
        if admin.state == "created" and admin.generated_password:
            print(f"created user admin with password: {admin.generated_password}   (shown once; keep it)")
        elif admin.state == "created":
            print("created user admin (password from CUNXIANG_ADMIN_PASSWORD)")
        elif admin.state == "reset":
            print("user admin exists: its password is now CUNXIANG_ADMIN_PASSWORD")
        else:
            print(
                "user admin exists (password unchanged; to reset it, set CUNXIANG_ADMIN_PASSWORD or run "
                "`cunxiang users passwd --username admin`)"
            )
        if per_village > 0:
            devices = device_flows.register_simulated(session=session, per_village=per_village)
            print(f"{len(devices)} simulated speakers registered ({per_village} per village)")


# ---------------------------------------------------------------- speakers


def cmd_agent(args: argparse.Namespace, rest: list[str]) -> int:
    from cunxiang_agent.cli import main as agent_main

    return agent_main(rest)


def cmd_simulate(args: argparse.Namespace) -> int:
    from devices import flows as device_flows
    from devices import keys as device_keys
    from devices import simulate

    settings = _settings(args)
    broker = args.broker or settings.mqtt.url or f"mqtt://127.0.0.1:{settings.mqtt.port}"
    factory = _session_factory(settings)
    with factory() as session:
        if args.no_accounts:
            specs_src = [
                (d, a, None)
                for d, a in device_flows.register_simulated(session=session, per_village=args.per_village)
            ]
        else:
            # New passwords each start, handed to the speakers in memory: the database keeps only
            # hashes, and the broker (embedded: at once; Mosquitto: after `mosquitto files`) takes them.
            specs_src = device_flows.register_simulated_with_passwords(
                session=session, per_village=args.per_village
            )
    if not specs_src:
        print(
            "no villages in the database: run `cunxiang serve --demo` or `cunxiang regions import`",
            file=sys.stderr,
        )
        return 2
    behaviours = simulate.pick_behaviours(
        [d for d, _, _ in specs_src], fail_rate=args.fail_rate, silent_rate=args.silent_rate, seed=args.seed,
        flaky_rate=args.flaky_rate, drift_rate=args.drift_rate,
    )  # fmt: skip
    specs = [
        simulate.SpeakerSpec(device_id=d, area_code=a, behaviour=behaviours[d], password=password)
        for d, a, password in specs_src
    ]
    counts = {b: list(behaviours.values()).count(b) for b in set(behaviours.values())}
    # The server's keys, from the data dir it shares with `serve` (none: signatures are not checked).
    trusted = [key for _, key in device_keys.load(settings.data_dir).trusted()]
    print(f"simulating {len(specs)} speakers on {broker}: {counts}", flush=True)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await simulate.run_speakers(
            specs, broker, cache_dir=settings.data_dir / "sim-cache", stop=stop, trusted_keys=trusted
        )

    asyncio.run(run())
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    import json
    import threading

    from core.db import make_engine, make_session_factory
    from devices.ingest import ReportIngestor
    from devices.transport import LinkError, MqttLink, claim_client_id

    settings = _settings(args)
    broker = args.broker or settings.mqtt.url
    if not broker:
        print(
            "`cunxiang ingest` needs an external broker: set CUNXIANG_MQTT_URL or pass --broker "
            "(the embedded broker lives inside `cunxiang serve`, which ingests by itself)",
            file=sys.stderr,
        )
        return 2
    group = settings.devices.ingest_shared_group if args.shared_group is None else args.shared_group
    # Workers do not migrate: `cunxiang serve` (or `cunxiang db upgrade`) owns the schema.
    factory = make_session_factory(make_engine(settings.database_url))
    d = settings.devices
    # A fixed client id per worker (its own slot in the data dir) with a persistent session: the
    # broker queues this worker's share of the reports while it is away.
    if args.client_id:
        client_id, slot = args.client_id, None
    else:
        try:
            client_id, slot = claim_client_id(f"{settings.mqtt.client_id}-ingest", settings.data_dir)
        except LinkError as exc:
            print(f"cannot ingest: {exc}", file=sys.stderr)
            return 2
    link = MqttLink(
        broker, client_id=client_id, persistent=True,
        ca_file=d.tls_ca_file, cert_file=d.tls_cert_file, key_file=d.tls_key_file,
    )  # fmt: skip
    ingestor = ReportIngestor(link=link, session_factory=factory, shared_group=group)
    ingestor.start()  # subscribed before connecting: the queued reports find their handler
    try:
        link.connect()
    except LinkError as exc:
        ingestor.stop()
        print(f"cannot ingest: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"ingesting speaker messages from {broker}" + (f" in shared group {group!r}" if group else ""),
          flush=True)  # fmt: skip
    while not stop.wait(args.stats_interval or None):
        log.info("ingest counts: %s", dict(ingestor.counts))
    ingestor.flush(timeout=10)
    ingestor.stop()
    link.close()
    if slot is not None:
        slot.close()
    # The last line is the counts as JSON, for scripts (bench/ingest_workers.py reads it).
    print(json.dumps(dict(ingestor.counts), sort_keys=True), flush=True)
    return 0


# ---------------------------------------------------------------- admin


def cmd_regions_import(args: argparse.Namespace) -> int:
    from core import flows as core_flows
    from core import regions

    settings = _settings(args)
    factory = _session_factory(settings)
    try:
        with factory() as session:
            result = core_flows.import_regions(session=session, path=Path(args.file))
    except regions.RegionImportError as exc:
        print(f"{args.file}: nothing imported; {len(exc.errors)} bad row(s):", file=sys.stderr)
        for line, message in exc.errors:
            print(f"  line {line}: {message}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.file}: {result.created} created, {result.updated} updated")
    return 0


def _read_password(given: str | None) -> str | None:
    """--password, else asked twice on a terminal, else one line of stdin; None if typed differently."""
    if given is not None:
        return given
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass("password: ")
    return password if getpass.getpass("again: ") == password else None


def cmd_users_add(args: argparse.Namespace) -> int:
    from core import flows as core_flows
    from core import users

    password = _read_password(args.password)
    if password is None:
        print("error: the passwords differ", file=sys.stderr)
        return 1
    settings = _settings(args)
    factory = _session_factory(settings)
    try:
        with factory() as session:
            user = core_flows.add_user(
                session=session,
                username=args.username,
                password=password,
                role=args.role,
                area_code=args.area,
            )
            print(
                f"user {user.username} ({user.role}{', ' + user.area_code if user.area_code else ''}) created"
            )
    except users.UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_users_passwd(args: argparse.Namespace) -> int:
    from core import flows as core_flows
    from core import users

    password = _read_password(args.password)
    if password is None:
        print("error: the passwords differ", file=sys.stderr)
        return 1
    settings = _settings(args)
    factory = _session_factory(settings)
    try:
        with factory() as session:
            core_flows.set_password(session=session, username=args.username, password=password)
    except users.UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"password of user {args.username} changed; its tokens and console sessions are revoked")
    return 0


def cmd_users_active(args: argparse.Namespace) -> int:
    """`users disable` / `users enable`: as the machine's operator (no role check)."""
    from core import flows as core_flows
    from core import users

    active = args.users_command == "enable"
    factory = _session_factory(_settings(args))
    try:
        with factory() as session:
            core_flows.set_user_active(session=session, actor=None, username=args.username, active=active)
    except users.UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    done = "enabled" if active else "disabled; its tokens and console sessions are revoked"
    print(f"user {args.username} {done}")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from api import migrate

    settings = _settings(args)
    migrate.upgrade(settings.database_url)
    print(f"database at {settings.database_url.split('@')[-1]} is up to date")
    return 0


def cmd_tts_cleanup(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from sqlalchemy import select

    from playlists.models import PlaylistItem
    from scheduler.models import Broadcast, Occurrence
    from tts import flows as tts_flows

    settings = _settings(args)
    with _session_factory(settings)() as session:
        referenced = {
            i
            for column in (Broadcast.asset_id, Occurrence.asset_id, PlaylistItem.asset_id)
            for i in session.scalars(select(column).where(column.is_not(None)))
        }
        report = tts_flows.cleanup(
            session=session,
            settings=settings,
            referenced_ids=referenced,
            min_age=timedelta(hours=args.min_age_hours),
            dry_run=args.dry_run,
        )
    verb = "would remove" if args.dry_run else "removed"
    print(
        f"{verb} {report.assets_removed} unused assets and {report.files_removed} files "
        f"({report.bytes_freed / 1e6:.1f} MB); "
        f"kept {report.assets_kept_young} younger than {args.min_age_hours} h"
    )
    return 0


# ---------------------------------------------------------------- keys and broker accounts


def cmd_keys(args: argparse.Namespace) -> int:
    from devices import keys

    settings = _settings(args)
    try:
        if args.keys_command == "generate":
            keyset, created = keys.generate(settings.data_dir)
            print(
                "created a new command-signing key" if created else "a command-signing key exists already",
                file=sys.stderr,
            )
        elif args.keys_command == "rotate":
            keyset = keys.stage(settings.data_dir) if args.stage else keys.rotate(settings.data_dir)
            print(
                "staged the next key: give speakers the file below, then run `cunxiang keys rotate`"
                if args.stage
                else "rotated: the new key signs from now on (restart `cunxiang serve`); speakers must "
                "trust it (file below)",
                file=sys.stderr,
            )
        else:
            keyset = keys.load(settings.data_dir)
    except keys.KeyStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"# {keys.keys_dir(settings.data_dir) / keys.TRUSTED}", file=sys.stderr)
    print(keyset.trusted_file(), end="")
    return 0


def cmd_mosquitto_credentials(args: argparse.Namespace) -> int:
    from core.errors import CunxiangError
    from devices import flows as device_flows

    if not args.device_id and not args.missing:
        print("no device given (DEVICE_ID ... or --missing)", file=sys.stderr)
        return 2
    settings = _settings(args)
    factory = _session_factory(settings)
    with factory() as session:
        try:
            issued = device_flows.issue_passwords(
                session=session, device_ids=list(args.device_id), missing=args.missing
            )
        except CunxiangError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if not issued:
        print("no speaker without a password", file=sys.stderr)
        return 2
    print("device_id,username,password")
    for device_id, username, password in issued:
        print(f"{device_id},{username},{password}")
    print("passwords are shown once; run `cunxiang mosquitto files` and reload Mosquitto", file=sys.stderr)
    return 0


def cmd_mosquitto_files(args: argparse.Namespace) -> int:
    from devices import credentials
    from devices.transport import parse_broker_url

    settings = _settings(args)
    user, password = args.server_user, args.server_password
    if settings.mqtt.url and not (user and password):
        _, _, url_user, url_password = parse_broker_url(settings.mqtt.url)
        user, password = user or url_user, password or url_password
    if not (user and password):
        print(
            "the server account needs a user and password: set CUNXIANG_MQTT_URL="
            "mqtt://USER:PASS@host:port or pass --server-user/--server-password",
            file=sys.stderr,
        )
        return 2
    tls = None
    if args.tls_cert or args.tls_key or args.tls_ca:
        if not (args.tls_cert and args.tls_key):
            print("--tls-cert and --tls-key go together (--tls-ca is optional)", file=sys.stderr)
            return 2
        tls = credentials.TlsFiles(
            certfile=str(Path(args.tls_cert).resolve()),
            keyfile=str(Path(args.tls_key).resolve()),
            cafile=str(Path(args.tls_ca).resolve()) if args.tls_ca else None,
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    factory = _session_factory(settings)
    with factory() as session:
        admin = credentials.Account(user, credentials.hash_password(password))
        passwd = credentials.password_file(session=session, admins=[admin])
        acl = credentials.acl_file(session=session, admins=[user])
    secrets = [out / "cunxiang.passwd", out / "cunxiang.acl"]
    for path, content in zip(secrets, (passwd, acl), strict=True):
        _write_private(path, content)
    conf = credentials.mosquitto_conf(
        password_path=str(secrets[0].resolve()), acl_path=str(secrets[1].resolve()),
        port=args.port, host=args.bind, tls=tls,
    )  # fmt: skip
    (out / "cunxiang.conf").write_text(conf)
    print(f"wrote {out}/cunxiang.passwd ({passwd.count(chr(10))} accounts), cunxiang.acl, cunxiang.conf")
    _give_to_mosquitto(secrets)
    if tls:
        print(
            f"Mosquitto 2.0 loads {tls.keyfile} after dropping root: it must be readable by user "
            f"{MOSQUITTO_GROUP} (e.g. sudo chown root:{MOSQUITTO_GROUP} {tls.keyfile} && sudo chmod 0640 "
            f"{tls.keyfile})",
            file=sys.stderr,
        )
    return 0


def _write_private(path: Path, content: str) -> None:
    """Write a file that is never readable by others, not even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    path.chmod(0o640)  # an existing file keeps its old mode through O_CREAT


def _give_to_mosquitto(paths: list[Path]) -> None:
    """Make the password and ACL files readable by the `mosquitto` group: Mosquitto reads them after
    dropping root for its own user, and stops with `Unable to open pwfile` when it cannot."""
    import grp

    try:
        gid = grp.getgrnam(MOSQUITTO_GROUP).gr_gid
    except KeyError:
        print(
            f"note: no `{MOSQUITTO_GROUP}` group on this machine; on the broker host run: "
            f"sudo chown root:{MOSQUITTO_GROUP} {' '.join(str(p.resolve()) for p in paths)} && "
            f"sudo chmod 0640 {' '.join(str(p.resolve()) for p in paths)}",
            file=sys.stderr,
        )
        return
    if os.geteuid() == 0:
        for path in paths:
            os.chown(path, 0, gid)
        print(f"{', '.join(p.name for p in paths)}: owner root:{MOSQUITTO_GROUP}, mode 0640", file=sys.stderr)
        return
    names = " ".join(str(p.resolve()) for p in paths)
    print(
        f"Mosquitto cannot read these files yet: run\n  sudo chown root:{MOSQUITTO_GROUP} {names}\n"
        f"  sudo chmod 0640 {names}\n"
        f"(and make sure user {MOSQUITTO_GROUP} can enter {paths[0].parent.resolve()})",
        file=sys.stderr,
    )


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cunxiang", description="村响: village loudspeaker broadcasting")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)

    def data_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data-dir", help="holds the SQLite file and audio (default ./var or CUNXIANG_DATA_DIR)"
        )

    p = sub.add_parser("serve", help="run the server (API, scheduler, ingestion, embedded broker)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    data_dir(p)
    p.add_argument(
        "--demo", action="store_true", help="load the demo county, admin user and simulated speakers"
    )
    p.add_argument(
        "--open-broker",
        action="store_true",
        help="demo only: the embedded MQTT broker accepts anyone (loopback only; default: accounts)",
    )
    p.add_argument(
        "--open-broker-any-host",
        action="store_true",
        help="let an open embedded broker listen on a non-loopback address (implies --open-broker)",
    )
    p.add_argument(
        "--speakers-per-village",
        type=int,
        default=DEMO_SPEAKERS_PER_VILLAGE,
        help="simulated speakers with --demo",
    )
    p.set_defaults(func=cmd_serve)

    sub.add_parser("agent", help="run one speaker (see `cunxiang agent --help`)", add_help=False)

    p = sub.add_parser("simulate", help="run simulated speakers for every village")
    p.add_argument("--per-village", type=int, default=DEMO_SPEAKERS_PER_VILLAGE)
    p.add_argument("--fail-rate", type=float, default=0.0, help="share of speakers whose playback fails")
    p.add_argument("--silent-rate", type=float, default=0.0, help="share of speakers that never report")
    p.add_argument("--flaky-rate", type=float, default=0.0, help="share whose link drops now and then")
    p.add_argument("--drift-rate", type=float, default=0.0, help="share whose clock runs 2 minutes fast")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--broker", help="mqtt://host:port (default CUNXIANG_MQTT_URL or the embedded broker)")
    p.add_argument(
        "--no-accounts",
        action="store_true",
        help="connect without per-speaker passwords (an open broker); default: issue each speaker a new one",
    )
    data_dir(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("ingest", help="an ingest worker: speaker reports/status into the database")
    p.add_argument("--broker", help="mqtt://host:port (default CUNXIANG_MQTT_URL)")
    p.add_argument(
        "--shared-group",
        help="share the subscriptions with other workers as $share/GROUP/... "
        "(default CUNXIANG_DEVICES_INGEST_SHARED_GROUP)",
    )
    p.add_argument("--stats-interval", type=float, default=60.0, help="log the counts this often (0: never)")
    p.add_argument(
        "--client-id",
        help="this worker's fixed MQTT client id (default: CUNXIANG_MQTT_CLIENT_ID-ingest-NODE-SLOT, "
        "a free slot in the data dir); each worker needs its own",
    )
    data_dir(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("regions", help="administrative areas")
    rsub = p.add_subparsers(dest="regions_command", required=True)
    p = rsub.add_parser("import", help="import areas from CSV or JSON (see docs/regions.md)")
    p.add_argument("file")
    data_dir(p)
    p.set_defaults(func=cmd_regions_import)

    p = sub.add_parser("users", help="accounts")
    usub = p.add_subparsers(dest="users_command", required=True)
    p = usub.add_parser("add", help="add a user (password from --password or stdin)")
    p.add_argument("--username", required=True)
    p.add_argument("--role", required=True, choices=["admin", "approver", "staff", "operator", "viewer"])
    p.add_argument("--area", help="area code the user is limited to")
    p.add_argument("--password")
    data_dir(p)
    p.set_defaults(func=cmd_users_add)
    p = usub.add_parser("passwd", help="set a user's password (from --password or stdin)")
    p.add_argument("--username", required=True)
    p.add_argument("--password")
    data_dir(p)
    p.set_defaults(func=cmd_users_passwd)
    for name, what in (
        ("disable", "disable a user (revokes its tokens and sessions)"),
        ("enable", "enable a user"),
    ):
        p = usub.add_parser(name, help=what)
        p.add_argument("--username", required=True)
        data_dir(p)
        p.set_defaults(func=cmd_users_active)

    p = sub.add_parser("tts", help="speech assets")
    tsub = p.add_subparsers(dest="tts_command", required=True)
    p = tsub.add_parser("cleanup", help="delete audio no broadcast or playlist uses")
    p.add_argument("--min-age-hours", type=float, default=24.0, help="keep unused assets younger than this")
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    data_dir(p)
    p.set_defaults(func=cmd_tts_cleanup)

    p = sub.add_parser("keys", help="command-signing keys (generate, rotate, show)")
    ksub = p.add_subparsers(dest="keys_command", required=True)
    for name, text in (
        ("generate", "create the key if there is none"),
        ("show", "print the trusted-keys file"),
    ):
        data_dir(ksub.add_parser(name, help=text))
    p = ksub.add_parser("rotate", help="make a new key current (old one stays trusted as previous)")
    p.add_argument("--stage", action="store_true", help="only create the next key, trusted but not used")
    data_dir(p)
    for p in ksub.choices.values():
        p.set_defaults(func=cmd_keys)

    p = sub.add_parser("mosquitto", help="per-speaker MQTT accounts and Mosquitto password/ACL files")
    msub = p.add_subparsers(dest="mosquitto_command", required=True)
    p = msub.add_parser("credentials", help="new MQTT passwords for speakers (printed once, CSV)")
    p.add_argument("device_id", nargs="*")
    p.add_argument("--missing", action="store_true", help="every speaker without a password yet")
    data_dir(p)
    p.set_defaults(func=cmd_mosquitto_credentials)
    p = msub.add_parser("files", help="write cunxiang.passwd, cunxiang.acl and cunxiang.conf")
    p.add_argument("--out", default="mosquitto", help="directory (default ./mosquitto)")
    p.add_argument("--server-user", help="the server's account (default: from CUNXIANG_MQTT_URL)")
    p.add_argument("--server-password", help="its password (default: from CUNXIANG_MQTT_URL)")
    p.add_argument("--port", type=int, help="the listener's port (default 1883, 8883 with TLS)")
    p.add_argument("--bind", help="the listener's address (default: every interface)")
    p.add_argument("--tls-cert", help="broker certificate (PEM): the listener then serves TLS only")
    p.add_argument("--tls-key", help="the certificate's private key (PEM)")
    p.add_argument("--tls-ca", help="CA file for client certificates (optional)")
    data_dir(p)
    p.set_defaults(func=cmd_mosquitto_files)

    p = sub.add_parser("db", help="database")
    dsub = p.add_subparsers(dest="db_command", required=True)
    p = dsub.add_parser("upgrade", help="apply migrations")
    data_dir(p)
    p.set_defaults(func=cmd_db_upgrade)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `agent` has its own parser; hand it everything after the word.
    if argv and argv[0] == "agent":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return cmd_agent(argparse.Namespace(), argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Migrations run at every start; their step-by-step log is noise at INFO.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
