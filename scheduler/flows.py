"""The broadcast use cases: check who may act, change, commit, THEN plan jobs and send commands.

Every door (API route, console form, CLI) calls exactly one of these per action and renders what
it returns; none commits, schedules or publishes by itself. Each flow owns its transaction: the
lifecycle verbs flush, the flow commits, and only after the commit does anything leave the
process (a job planned with the runner, a signed command through the `CommandSender`), so a
dispatch job or a speaker's answer always finds what it refers to. A refusal is a
`core.errors.CunxiangError`, raised before anything is committed; the transaction is rolled back.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from core import access
from core.clock import utcnow
from core.db import transaction
from core.errors import InvalidInput, NotFound, Unavailable
from core.models import Region, Role, User
from core.settings import Settings
from cunxiang_shared import protocol
from devices.commands import CommandSender
from devices.transport import LinkError, LinkHeld
from scheduler import audit, lifecycle, quiet
from scheduler.access import AUTHOR_ROLES, visible_broadcast
from scheduler.lifecycle import StopPlan
from scheduler.models import Broadcast, Occurrence
from scheduler.planner import JobPlanner
from scheduler.schemas import BroadcastCreate

log = logging.getLogger(__name__)


class StopNotSent(Unavailable):
    """The change was committed, but its stop commands did not reach the broker."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="stop_not_sent")


def _plan(planner: JobPlanner, occurrences: Iterable[Occurrence]) -> None:
    for occ in occurrences:
        planner.schedule(occ)


# ------------------------------------------------------------------ the approval flow


def create_broadcast(
    *,
    session: Session,
    settings: Settings,
    planner: JobPlanner,
    user: User,
    broadcast_in: BroadcastCreate,
    previewed_asset_id: int | None = None,
) -> Broadcast:
    """Make a broadcast and (unless `submit` is false) submit it; an approver's own routine one is
    approved and planned at once."""
    access.require_role(user, *AUTHOR_ROLES)
    with transaction(session):
        broadcast = lifecycle.create_broadcast(
            session=session, settings=settings, user=user, broadcast_in=broadcast_in,
            previewed_asset_id=previewed_asset_id,
        )  # fmt: skip
    _plan(planner, broadcast.occurrences)
    return broadcast


def submit_broadcast(
    *,
    session: Session,
    settings: Settings,
    planner: JobPlanner,
    user: User,
    broadcast_id: int,
    comment: str | None = None,
) -> Broadcast:
    """Draft -> submitted (audio fixed now); approved and planned at once when the submitter may."""
    access.require_role(user, *AUTHOR_ROLES)
    with transaction(session):
        broadcast = visible_broadcast(session=session, user=user, broadcast_id=broadcast_id)
        lifecycle.submit_broadcast(
            session=session, settings=settings, user=user, broadcast=broadcast, comment=comment
        )
    _plan(planner, broadcast.occurrences)
    return broadcast


def approve_broadcast(
    *,
    session: Session,
    settings: Settings,
    planner: JobPlanner,
    user: User,
    broadcast_id: int,
    comment: str | None = None,
) -> Broadcast:
    """Submitted -> approved -> scheduled, its occurrences planned. Emergency: never by its creator."""
    access.require_role(user, Role.approver)
    with transaction(session):
        broadcast = visible_broadcast(session=session, user=user, broadcast_id=broadcast_id)
        planned = lifecycle.approve_broadcast(
            session=session, settings=settings, user=user, broadcast=broadcast, comment=comment
        )
    _plan(planner, planned)
    return broadcast


def reject_broadcast(*, session: Session, user: User, broadcast_id: int, comment: str | None) -> Broadcast:
    """Submitted -> rejected; the reason (`comment`) is required."""
    access.require_role(user, Role.approver)
    with transaction(session):
        broadcast = visible_broadcast(session=session, user=user, broadcast_id=broadcast_id)
        lifecycle.reject_broadcast(session=session, user=user, broadcast=broadcast, comment=comment)
    return broadcast


def cancel_broadcast(
    *,
    session: Session,
    planner: JobPlanner,
    sender: CommandSender,
    user: User,
    broadcast_id: int,
    comment: str | None = None,
) -> Broadcast:
    """Drop future airings and stop the speakers playing (or about to play) it.

    The cancel is committed first; a stop the broker refuses raises StopNotSent afterwards.
    """
    with transaction(session):
        broadcast = visible_broadcast(session=session, user=user, broadcast_id=broadcast_id)
        plan = lifecycle.cancel_broadcast(session=session, user=user, broadcast=broadcast, comment=comment)
    planner.unschedule(plan.cancelled)
    try:
        send_stops(sender=sender, plan=plan)
    except LinkHeld as exc:  # the broker is away: the stop goes out when the link is back (and to
        # each speaker that connects: dispatch.resend_open), so the cancel stands as done
        log.warning("cancel of broadcast %s: stop held until the broker is back: %s", broadcast_id, exc)
    except LinkError as exc:
        log.error("cancel of broadcast %s: stop not sent: %s", broadcast_id, exc)
        raise StopNotSent(f"cancelled, but the stop could not be sent to speakers: {exc}") from None
    return broadcast


# ------------------------------------------------------------------ areas


@dataclass(frozen=True)
class AreaStop:
    """What stopping an area did."""

    area_code: str
    stopped_occurrences: list[int]
    commands_sent: int


def stop_area(
    *, session: Session, sender: CommandSender, user: User, area_code: str, comment: str | None = None
) -> AreaStop:
    """Stop everything playing or about to play on an area's speakers, now (future airings stay)."""
    with transaction(session):
        plan = lifecycle.stop_area(session=session, user=user, area_code=area_code, comment=comment)
    try:
        sent = send_stops(sender=sender, plan=plan)
    except LinkHeld as exc:  # the stop-all of an area is not re-sent later: say it did not go out
        log.error("stop of area %s held, not sent: %s", area_code, exc)
        raise StopNotSent(f"the broker is away; the stop could not be sent now: {exc}") from None
    except LinkError as exc:
        log.error("stop of area %s not sent: %s", area_code, exc)
        raise StopNotSent(f"the stop could not be sent: {exc}") from None
    return AreaStop(area_code=area_code, stopped_occurrences=plan.occurrence_ids, commands_sent=sent)


def send_stops(*, sender: CommandSender, plan: StopPlan) -> int:
    """Publish a `stop` for every occurrence in the plan (and the area's stop-all); return how many."""
    sent = 0
    for occurrence_id in plan.occurrence_ids:
        sent += sender.send(protocol.StopCommand(occurrence_id=occurrence_id), plan.topics[occurrence_id])
    if plan.stop_all_topic is not None:
        issued = utcnow()
        stop_all = protocol.StopCommand(
            occurrence_id=None, issued_at=issued, expires_at=issued + timedelta(seconds=protocol.STOP_ALL_TTL_S)
        )
        sent += sender.send(stop_all, [plan.stop_all_topic])
    return sent


def area_of(*, session: Session, user: User, area_code: str) -> Region:
    """The area, if it exists (NotFound) and lies in the user's area (Forbidden)."""
    region = session.get(Region, area_code)
    if region is None:
        raise NotFound(f"no area {area_code}")
    access.require_area(user, area_code)
    return region


def set_quiet_hours(
    *, session: Session, user: User, area_code: str, start: str | None, end: str | None
) -> None:
    """Give an area its own quiet hours (start == end: none); both None: inherit again."""
    access.require_role(user, Role.approver)
    with transaction(session):
        area_of(session=session, user=user, area_code=area_code)
        if (start is None) != (end is None):
            raise InvalidInput("end" if end is None else "start", "give both or neither")
        start_t = quiet.parse_time(start, "start") if start else None
        end_t = quiet.parse_time(end, "end") if end else None
        quiet.set_for_area(session=session, user=user, area_code=area_code, start=start_t, end=end_t)
        audit.record(
            session=session, user=user, action="quiet_hours", object_type="area", object_id=area_code,
            detail={"start": start, "end": end},
        )  # fmt: skip
