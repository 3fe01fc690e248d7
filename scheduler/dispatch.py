"""Dispatch and close: due occurrences become signed play commands on the wire, and are settled at
their reporting deadline.

Airings due at the same instant go out as one batch: one transaction settles what cannot air and
snapshots the deliveries of the rest, their commands are published highest priority first through
the `CommandSender`, and one transaction records what went out. Recorded only after publishing: a
runner that dies in between leaves them `scheduled`, and the next runner sends them again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session, selectinload, sessionmaker

from core import regions
from core.clock import utcnow
from core.db import session_scope
from core.settings import Settings
from cunxiang_shared import protocol
from cunxiang_shared.states import DeliveryState
from devices import service as device_service
from devices.commands import CommandSender
from devices.models import Delivery, Device
from devices.transport import LinkError, LinkHeld
from scheduler import quiet
from scheduler.models import Broadcast, BroadcastStatus, Occurrence, OccurrenceStatus
from scheduler.planning import dispatch_ahead, plan_topics, rule_end, rule_of, zone_of
from tts import store

log = logging.getLogger(__name__)

# The detail of an occurrence dispatched while the link was down (its command held by paho).
HELD_PREFIX = "link down at dispatch: command held"
# Device ids per query when re-sending to speakers that came online.
RESEND_CHUNK = 500
# At start, speakers are asked again for their reports of airings closed this recently (a
# deadline that passed while the server was down; late reports still count, report_writer).
REPORTS_LOOKBACK = timedelta(hours=6)
# Reports are asked for from this long before the earliest open airing's dispatch (clock slack).
REPORTS_MARGIN = timedelta(minutes=2)


# One dispatch batch at a time in a process: an occurrence stays `scheduled` until its commands
# are out, so two batches running at once could both send it.
_batch_lock = threading.Lock()


@dataclass
class _Airing:
    """An occurrence ready to go out: deliveries snapshotted, its command built (signed when sent)."""

    occurrence_id: int
    rank: int
    start_at: datetime
    topics: list[str]
    command: protocol.PlayCommand
    speakers: int


def dispatch_due(
    *, session_factory: sessionmaker[Session], sender: CommandSender, settings: Settings, at: datetime
) -> dict[int, str]:
    """Dispatch, as one batch, every occurrence whose dispatch time has come by `at` (or by now).

    The dispatch time is `start_at` minus `dispatch_ahead`. Airings that fall together (the 07:00
    slot of a whole county) go out together: one transaction snapshots all their deliveries, their
    play commands are published highest priority first, and one transaction records them as
    dispatched. Returns the new status of every occurrence the batch handled.
    """
    cutoff = max(at, utcnow()) + dispatch_ahead(settings.scheduler)
    return _dispatch_batch(
        session_factory=session_factory, sender=sender, settings=settings, which=Occurrence.start_at <= cutoff
    )


def dispatch(
    *, session_factory: sessionmaker[Session], sender: CommandSender, settings: Settings, occurrence_id: int
) -> str:
    """Dispatch one occurrence now (a batch of one); return its status afterwards."""
    outcome = _dispatch_batch(
        session_factory=session_factory, sender=sender, settings=settings,
        which=Occurrence.id == occurrence_id,
    )
    if occurrence_id in outcome:
        return outcome[occurrence_id]
    with session_factory() as session:
        occ = session.get(Occurrence, occurrence_id)
        return occ.status if occ is not None else "unknown"


def _dispatch_batch(
    *,
    session_factory: sessionmaker[Session],
    sender: CommandSender,
    settings: Settings,
    which: ColumnElement[bool],
) -> dict[int, str]:
    """Prepare (one transaction), publish, then record (one transaction) the due occurrences.

    Recorded only after publishing: a runner that dies in between leaves them `scheduled`, and the
    next runner sends them again (with the deliveries already snapshotted). Speakers keep one
    airing per occurrence id, so a command that went out twice airs once; one never sent would
    never air.
    """
    with _batch_lock:
        outcome: dict[int, str] = {}
        with session_scope(session_factory) as session:
            airings = _prepare_batch(session=session, settings=settings, which=which, outcome=outcome)
        # Deliveries are committed before the first command leaves, so no report can beat them.
        sent: list[_Airing] = []
        held: dict[int, str] = {}
        failed: dict[int, str] = {}
        sent_at = utcnow()
        try:
            for airing in airings:  # highest priority first
                try:
                    sender.send(airing.command, airing.topics)
                except LinkHeld as exc:
                    # Not refused: paho sends it after reconnecting, and the reconnect listener
                    # (resend_open) sends it again to every topic while its start window is open.
                    held[airing.occurrence_id] = f"{HELD_PREFIX} at {sent_at.isoformat()}: {exc}"
                    sent.append(airing)
                except LinkError as exc:
                    failed[airing.occurrence_id] = str(exc)
                else:
                    sent.append(airing)
        finally:
            if sent or failed:
                with session_scope(session_factory) as session:
                    outcome |= _record_batch(session=session, sent=sent, held=held, failed=failed, at=sent_at)
        _stop_withdrawn(sender=sender, sent=sent, outcome=outcome)
        for airing in sent:
            if outcome.get(airing.occurrence_id) == OccurrenceStatus.dispatched:
                log.info(
                    "occurrence %s dispatched to %d speakers over %d topics",
                    airing.occurrence_id, airing.speakers, len(airing.topics),
                )  # fmt: skip
        for occurrence_id, reason in failed.items():
            log.error("occurrence %s could not be sent: %s", occurrence_id, reason)
        for occurrence_id, reason in held.items():
            log.warning("occurrence %s dispatched while the link is down: %s", occurrence_id, reason)
        if len(sent) > 1:
            log.info("dispatched %d occurrences in one batch", len(sent))
        return outcome


def _prepare_batch(
    *, session: Session, settings: Settings, which: ColumnElement[bool], outcome: dict[int, str]
) -> list[_Airing]:
    """Settle what cannot air (too late, quiet hours, no audio), snapshot the rest's deliveries.

    A handful of statements for the whole batch plus one insert per airing (its deliveries), on
    plain rows rather than ORM objects: the batch is on the clock. Returns the airings to publish,
    highest priority first.
    """
    from tts.models import AudioAsset

    rows = session.execute(
        select(
            Occurrence.id, Occurrence.start_at, Occurrence.expires_at, Broadcast.id.label("broadcast_id"),
            Broadcast.title, Broadcast.priority, Broadcast.target_areas, Broadcast.target_devices,
            Broadcast.asset_id, Broadcast.volume,
        )
        .join(Broadcast, Broadcast.id == Occurrence.broadcast_id)
        .where(Occurrence.status == OccurrenceStatus.scheduled, which)
        .order_by(Occurrence.start_at, Occurrence.id)
    ).all()  # fmt: skip
    if not rows:
        return []
    now = utcnow()
    asset_ids = {r.asset_id for r in rows if r.asset_id is not None}
    assets = {a.id: a for a in session.scalars(select(AudioAsset).where(AudioAsset.id.in_(asset_ids)))}
    named = {d for r in rows for d in r.target_devices or []}
    explicit = {d.id: d for d in session.scalars(select(Device).where(Device.id.in_(named)))} if named else {}

    def settle(occurrence_id: int, status: OccurrenceStatus, detail: str, *, final: bool = False) -> None:
        values = {"status": status, "detail": detail} | ({"finalized_at": now} if final else {})
        session.execute(
            update(Occurrence)
            .where(Occurrence.id == occurrence_id, Occurrence.status == OccurrenceStatus.scheduled)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        outcome[occurrence_id] = status

    live = []
    for r in rows:
        if now > r.expires_at:
            detail = f"dispatch ran at {now.isoformat()}, after the latest start {r.expires_at.isoformat()}"
            log.error("occurrence %s missed: %s", r.id, detail)
            settle(r.id, OccurrenceStatus.missed, detail)
        elif r.asset_id not in assets:
            detail = f"broadcast {r.broadcast_id} has no audio asset {r.asset_id}"
            log.error("occurrence %s not sent: %s", r.id, detail)
            settle(r.id, OccurrenceStatus.failed, detail)
        else:
            live.append(r)

    # Quiet hours again at air time (routine only): they may have changed since submission.
    routine = [r for r in live if not r.priority.is_emergency]
    area_sets = [
        list(dict.fromkeys([*(r.target_areas or []), *(explicit[d].area_code for d in r.target_devices or []
                                                       if d in explicit)]))
        for r in routine
    ]  # fmt: skip
    windows = quiet.windows_for_each(session=session, settings=settings, area_sets=area_sets)
    refused: set[int] = set()
    for r, area_windows in zip(routine, windows, strict=True):
        end = r.start_at + timedelta(milliseconds=assets[r.asset_id].duration_ms)
        hits = quiet.offending(windows=area_windows, airings=[(r.start_at, end)], zone=zone_of(settings))
        if hits:
            detail = f"in quiet hours {hits[0][1].describe()} at air time; only emergency may air"
            log.warning("occurrence %s refused: %s", r.id, detail)
            settle(r.id, OccurrenceStatus.refused, detail, final=True)
            refused.add(r.id)
    ready = [r for r in live if r.id not in refused]
    if not ready:
        return []

    # The speakers of every airing in one query, split per airing by area code.
    devices = device_service.expand_targets(
        session=session,
        area_codes=sorted({code for r in ready for code in r.target_areas or []}),
        device_ids=sorted({d for r in ready for d in r.target_devices or []}),
    )
    by_area: dict[str, list[Device]] = {}
    for device in devices:
        by_area.setdefault(device.area_code, []).append(device)
    # Snapshotted by a runner that died before recording the dispatch: send again, snapshot once.
    snapshotted = dict(
        session.execute(
            select(Delivery.occurrence_id, func.count())
            .where(Delivery.occurrence_id.in_([r.id for r in ready]))
            .group_by(Delivery.occurrence_id)
        ).all()
    )
    airings: list[_Airing] = []
    by_asset: dict[int, list[int]] = {}
    for r in ready:
        asset = assets[r.asset_id]
        prefixes = tuple(regions.code_prefix(c) for c in r.target_areas or [])
        targets = {d.id: d for code, group in by_area.items() if code.startswith(prefixes) for d in group}
        for device_id in r.target_devices or []:
            if device_id in explicit:
                targets.setdefault(device_id, explicit[device_id])
        if r.id in snapshotted:
            count = snapshotted[r.id]
            log.warning("occurrence %s was prepared but not recorded as sent: sending it again", r.id)
        else:
            count = device_service.snapshot_deliveries(
                session=session, occurrence_id=r.id, devices=[targets[k] for k in sorted(targets)],
                duration_s=asset.duration_ms / 1000,
            )  # fmt: skip
        own = [explicit[d] for d in r.target_devices or [] if d in explicit]
        area_topics, device_ids = plan_topics(area_codes=r.target_areas or [], devices=own)
        command = protocol.PlayCommand(
            occurrence_id=r.id,
            broadcast_id=r.broadcast_id,
            title=r.title,
            audio_url=store.media_url(settings.public_url, asset.sha256),
            sha256=asset.sha256,
            size_bytes=asset.size_bytes,
            duration_s=asset.duration_ms / 1000,
            start_at=r.start_at,
            expires_at=r.expires_at,
            priority=r.priority.rank,
            volume=r.volume,
        )
        topics = [protocol.area_command_topic(c) for c in area_topics]
        topics += [protocol.device_topic(d, "cmd") for d in device_ids]
        by_asset.setdefault(asset.id, []).append(r.id)
        airings.append(
            _Airing(
                occurrence_id=r.id, rank=r.priority.rank, start_at=r.start_at, topics=topics,
                command=command, speakers=count,
            )
        )  # fmt: skip
    for asset_id, ids in by_asset.items():  # the audio actually sent
        session.execute(
            update(Occurrence)
            .where(Occurrence.id.in_(ids))
            .values(asset_id=asset_id)
            .execution_options(synchronize_session=False)
        )
    airings.sort(key=lambda a: (-a.rank, a.start_at, a.occurrence_id))
    return airings


def _open_airings(session: Session, now: datetime, occurrence_ids: Sequence[int] | None = None):
    """Dispatched occurrences whose start window is still open, with their broadcasts."""
    query = (
        select(Occurrence)
        .options(selectinload(Occurrence.broadcast))
        .where(Occurrence.status == OccurrenceStatus.dispatched, Occurrence.expires_at > now)
        .order_by(Occurrence.start_at, Occurrence.id)
    )
    if occurrence_ids is not None:
        query = query.where(Occurrence.id.in_(occurrence_ids))
    return session.scalars(query).all()


def _play_command(occ: Occurrence, settings: Settings, assets: dict) -> protocol.PlayCommand | None:
    """The play command of a dispatched occurrence, as dispatch built it (None: its audio is gone)."""
    asset = assets.get(occ.asset_id)
    if asset is None:
        return None
    b = occ.broadcast
    return protocol.PlayCommand(
        occurrence_id=occ.id, broadcast_id=b.id, title=b.title,
        audio_url=store.media_url(settings.public_url, asset.sha256), sha256=asset.sha256,
        size_bytes=asset.size_bytes, duration_s=asset.duration_ms / 1000, start_at=occ.start_at,
        expires_at=occ.expires_at, priority=b.priority.rank, volume=b.volume,
    )  # fmt: skip


def resend_open(
    *,
    session_factory: sessionmaker[Session],
    sender: CommandSender,
    settings: Settings,
    device_ids: Sequence[str] | None = None,
) -> int:
    """Send again the play commands of dispatched airings whose start window is still open.

    Without `device_ids` (the link is back after an outage): each airing to all of its topics.
    With them (these speakers just came online): each airing that has a delivery still `pending`
    for one of them, to that speaker's own command topic. Airings cancelled after their play went
    out get their `stop` again first (`_withdrawn_stops`), to the same speakers. Speakers keep one
    airing per occurrence id, so a command they already have is dropped as a duplicate. Returns how
    many commands went out; an airing whose command was held at dispatch gets a detail saying when
    it was re-sent.
    """
    from tts.models import AudioAsset

    now = utcnow()
    with session_scope(session_factory) as session:
        if device_ids is None:
            airings = _open_airings(session, now)
            pending: dict[int, list[str]] = {}
        else:
            pending = {}
            for i in range(0, len(device_ids), RESEND_CHUNK):
                chunk = list(device_ids[i : i + RESEND_CHUNK])
                rows = session.execute(
                    select(Delivery.occurrence_id, Delivery.device_id)
                    .join(Occurrence, Occurrence.id == Delivery.occurrence_id)
                    .where(
                        Delivery.device_id.in_(chunk),
                        Delivery.state == DeliveryState.pending,
                        Occurrence.status == OccurrenceStatus.dispatched,
                        Occurrence.expires_at > now,
                    )
                ).all()
                for occurrence_id, device_id in rows:
                    pending.setdefault(occurrence_id, []).append(device_id)
            airings = _open_airings(session, now, sorted(pending))
        assets = {a.id: a for a in session.scalars(
            select(AudioAsset).where(AudioAsset.id.in_({o.asset_id for o in airings}))
        )}  # fmt: skip
        plans: list[tuple[Occurrence, protocol.PlayCommand, list[str]]] = []
        for occ in airings:
            command = _play_command(occ, settings, assets)
            if command is None:
                continue
            if device_ids is None:
                b = occ.broadcast
                own = list(session.scalars(select(Device).where(Device.id.in_(b.target_devices or []))))
                area_topics, own_ids = plan_topics(area_codes=b.target_areas or [], devices=own)
                topics = [protocol.area_command_topic(c) for c in area_topics]
                topics += [protocol.device_topic(d, "cmd") for d in own_ids]
            else:
                topics = [protocol.device_topic(d, "cmd") for d in sorted(pending[occ.id])]
            plans.append((occ, command, topics))
        plans.sort(key=lambda p: (-p[1].priority, p[0].start_at, p[0].id))
        stops = _withdrawn_stops(session, now, device_ids)
        sent = 0
        resent: list[int] = []
        for occurrence_id, topics in stops:
            try:
                sender.send(protocol.StopCommand(occurrence_id=occurrence_id), topics)
            except LinkError as exc:  # down again: the next reconnect tries again
                log.warning("stop of cancelled occurrence %s not re-sent: %s", occurrence_id, exc)
                return sent
            sent += 1
        for occ, command, topics in plans:
            try:
                sender.send(command, topics)
            except LinkError as exc:  # down again: the next reconnect tries again
                log.warning("occurrence %s not re-sent: %s", occ.id, exc)
                break
            sent += 1
            if occ.detail and occ.detail.startswith(HELD_PREFIX) and device_ids is None:
                resent.append(occ.id)
        for occurrence_id in resent:
            session.execute(
                update(Occurrence)
                .where(Occurrence.id == occurrence_id)
                .values(detail=f"{HELD_PREFIX}; re-sent at {now.isoformat()} when the link was back")
                .execution_options(synchronize_session=False)
            )
    if sent:
        who = "every topic" if device_ids is None else f"{len(device_ids)} speakers that came online"
        log.info("re-sent %d open airings to %s", sent, who)
    return sent


def _withdrawn_stops(
    session: Session, now: datetime, device_ids: Sequence[str] | None
) -> list[tuple[int, list[str]]]:
    """(occurrence id, topics) of a `stop` for every airing cancelled after its play command went
    out while it could still start: to its speakers' own topics (all of them, or those of
    `device_ids`). A speaker that missed the stop (offline, or the stop was held) drops the airing;
    one that never had it remembers the id and skips a late play."""
    query = (
        select(Delivery.occurrence_id, Delivery.device_id)
        .join(Occurrence, Occurrence.id == Delivery.occurrence_id)
        .where(
            Occurrence.status == OccurrenceStatus.cancelled,
            Occurrence.dispatched_at.is_not(None),
            Occurrence.expires_at > now,
        )
    )
    if device_ids is None:
        rows = list(session.execute(query).all())
    else:
        rows = []
        for i in range(0, len(device_ids), RESEND_CHUNK):
            chunk = list(device_ids[i : i + RESEND_CHUNK])
            rows += session.execute(query.where(Delivery.device_id.in_(chunk))).all()
    topics: dict[int, list[str]] = {}
    for occurrence_id, device_id in rows:
        topics.setdefault(occurrence_id, []).append(protocol.device_topic(device_id, "cmd"))
    return sorted(topics.items())


def reports_since(*, session_factory: sessionmaker[Session]) -> datetime | None:
    """From when speakers should resend their reports after this server was away: shortly before
    the earliest dispatch of an airing still open or closed within REPORTS_LOOKBACK (None: none)."""
    now = utcnow()
    with session_factory() as session:
        earliest = session.scalar(
            select(func.min(Occurrence.dispatched_at)).where(
                Occurrence.dispatched_at.is_not(None),
                (Occurrence.status == OccurrenceStatus.dispatched)
                | (Occurrence.deadline_at >= now - REPORTS_LOOKBACK),
            )
        )
    return earliest - REPORTS_MARGIN if earliest is not None else None


def _record_batch(
    *, session: Session, sent: Sequence[_Airing], held: dict[int, str], failed: dict[int, str], at: datetime
) -> dict[int, str]:
    """scheduled -> dispatched for what went out (with a detail for what the link held),
    -> failed for what the link refused."""
    outcome: dict[int, str] = {}
    ids = [a.occurrence_id for a in sent]
    if ids:
        recorded = session.scalars(
            update(Occurrence)
            .where(Occurrence.id.in_(ids), Occurrence.status == OccurrenceStatus.scheduled)
            .values(status=OccurrenceStatus.dispatched, dispatched_at=at)
            .returning(Occurrence.id)
            .execution_options(synchronize_session=False)
        ).all()
        outcome |= dict.fromkeys(recorded, OccurrenceStatus.dispatched)
        for occurrence_id, detail in held.items():
            session.execute(
                update(Occurrence)
                .where(Occurrence.id == occurrence_id, Occurrence.status == OccurrenceStatus.dispatched)
                .values(detail=detail)
                .execution_options(synchronize_session=False)
            )
        others = [i for i in ids if i not in outcome]
        if others:  # changed while being sent (cancelled): what are they now
            outcome |= dict(
                session.execute(
                    select(Occurrence.id, Occurrence.status).where(Occurrence.id.in_(others))
                ).all()
            )
    for occurrence_id, reason in failed.items():
        done = session.execute(
            update(Occurrence)
            .where(Occurrence.id == occurrence_id, Occurrence.status == OccurrenceStatus.scheduled)
            .values(status=OccurrenceStatus.failed, detail=reason)
            .execution_options(synchronize_session=False)
        )
        if done.rowcount == 1:
            outcome[occurrence_id] = OccurrenceStatus.failed
    return outcome


def _stop_withdrawn(*, sender: CommandSender, sent: Sequence[_Airing], outcome: dict[int, str]) -> None:
    """A play command that went out for an occurrence cancelled meanwhile is followed by a stop.

    (Cancelling a `scheduled` occurrence sends no stop: it was not on the speakers yet.)
    """
    for airing in sent:
        if outcome.get(airing.occurrence_id) != OccurrenceStatus.cancelled:
            continue
        try:
            sender.send(protocol.StopCommand(occurrence_id=airing.occurrence_id), airing.topics)
        except LinkHeld as exc:
            # Goes out after reconnecting, as its play does; the speakers stop it then.
            log.warning(
                "occurrence %s was cancelled while sent; its stop is held: %s", airing.occurrence_id, exc
            )
        except LinkError as exc:
            log.error(
                "occurrence %s was cancelled while sent; its stop failed: %s", airing.occurrence_id, exc
            )
        else:
            log.warning("occurrence %s was cancelled while being sent: stop sent", airing.occurrence_id)


def _finished(session: Session, broadcast: Broadcast) -> bool:
    """Every airing has happened (or never will): no planned one open, and the rule has ended."""
    still_open = session.scalar(
        select(func.count())
        .select_from(Occurrence)
        .where(
            Occurrence.broadcast_id == broadcast.id,
            Occurrence.status.in_([OccurrenceStatus.scheduled, OccurrenceStatus.dispatched]),
        )
    )
    if still_open:
        return False
    rule = rule_of(broadcast)
    if rule is None:
        return True
    end = rule_end(rule)
    return end is not None and broadcast.planned_until is not None and broadcast.planned_until >= end


def close_due(*, session_factory: sessionmaker[Session], deadline: datetime) -> int:
    """At a reporting deadline, settle every occurrence whose deadline it is, in one transaction.

    Returns how many deliveries became no_report.
    """
    with session_scope(session_factory) as session:
        occurrences = session.scalars(
            select(Occurrence)
            .options(selectinload(Occurrence.broadcast))
            .where(Occurrence.deadline_at == deadline, Occurrence.status != OccurrenceStatus.cancelled)
        ).all()
        return _close(session, occurrences)


def close(*, session_factory: sessionmaker[Session], occurrence_id: int) -> int:
    """At the deadline: unreported deliveries become no_report; return how many did."""
    with session_scope(session_factory) as session:
        occ = session.get(Occurrence, occurrence_id)
        return _close(session, [occ]) if occ is not None else 0


def _held_detail(detail: str | None) -> str | None:
    """The detail itself if it says the command was held at dispatch and not re-sent since."""
    if detail and detail.startswith(HELD_PREFIX) and "re-sent" not in detail:
        return detail
    return None


def _close(session: Session, occurrences: Sequence[Occurrence]) -> int:
    total = 0
    now = utcnow()
    broadcasts: dict[int, Broadcast] = {}
    for occ in occurrences:
        n = device_service.finalize_deliveries(session=session, occurrence_id=occ.id, at=occ.deadline_at)
        if occ.status in (OccurrenceStatus.scheduled, OccurrenceStatus.dispatched):
            occ.status = (
                OccurrenceStatus.done
                if occ.status == OccurrenceStatus.dispatched
                else OccurrenceStatus.missed
            )
            if occ.status == OccurrenceStatus.missed:
                occ.detail = "never dispatched before its deadline"
            elif _held_detail(occ.detail) is not None:
                # held at dispatch and the link never came back in its start window
                occ.detail += "; the link was not back before its latest start: not re-sent"
        occ.finalized_at = now
        broadcasts[occ.broadcast_id] = occ.broadcast
        log.info("occurrence %s closed; %d deliveries without report", occ.id, n)
        total += n
    session.flush()
    for broadcast in broadcasts.values():
        if broadcast.status == BroadcastStatus.scheduled and _finished(session, broadcast):
            broadcast.status = BroadcastStatus.done
    return total

