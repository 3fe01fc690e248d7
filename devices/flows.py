"""The speaker use cases: operator commands, registering speakers, issuing their MQTT passwords.

Each checks who may act (role, then area), changes, commits, and only then publishes, so a fast
speaker's answer always finds its command recorded. Doors call one of these and render.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import access
from core.db import transaction
from core.errors import NotFound, Unavailable
from core.models import Role, User
from devices import credentials, fleet
from devices import service as device_service
from devices.commands import CommandSender
from devices.models import Device, DeviceCommand
from devices.schemas import DeviceCommandCreate, DeviceCreate
from devices.transport import LinkError, LinkHeld

log = logging.getLogger(__name__)


class CommandNotSent(Unavailable):
    """The command was recorded, but the broker did not take it (its row says why)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="command_not_sent")


def device_in_scope(*, session: Session, user: User, device_id: str) -> Device:
    """The speaker, if it exists (NotFound) and lies in the user's area (Forbidden)."""
    device = device_service.get(session=session, device_id=device_id)
    if device is None:
        raise NotFound(f"no device {device_id}")
    access.require_area(user, device.area_code, what="device", name=device_id)
    return device


def send_command(
    *,
    session: Session,
    sender: CommandSender,
    user: User,
    command_in: DeviceCommandCreate,
    device_id: str | None = None,
    area_code: str | None = None,
) -> DeviceCommand:
    """Send set_volume, test_tone, stop or sync to one speaker or every speaker under an area.

    Recorded and committed before it leaves; a broker that refuses it leaves the row's `error`
    set and raises CommandNotSent. While the link is down the command is held and goes out when
    it is back (speakers refuse it after its `expires_at`): the row stays unsent, its `error` says
    so, and it is returned; the speakers' results tell what became of it.
    """
    access.require_role(user, Role.operator)
    if device_id is not None:
        device_in_scope(session=session, user=user, device_id=device_id)
    elif area_code is not None:
        access.require_area(user, area_code)
    command = fleet.build_command(command_in.type, command_in.model_dump(exclude={"type", "area"}))
    with transaction(session):
        row, topic = fleet.record_command(
            session=session, command=command, device_id=device_id, area_code=area_code, user_id=user.id
        )
    try:
        fleet.publish_command(sender=sender, command=command, topic=topic)
    except LinkHeld as exc:
        with transaction(session):
            row.error = f"held while the broker is away; sent when the link is back: {exc}"
        log.warning("command %s to %s held: %s", command_in.type, topic, exc)
        return row
    except LinkError as exc:
        with transaction(session):
            row.error = str(exc)
        log.error("command %s to %s not sent: %s", command_in.type, topic, exc)
        raise CommandNotSent(f"command not sent: {exc}") from None
    with transaction(session):
        row.sent = True
    return row


def register_device(*, session: Session, user: User, device_in: DeviceCreate) -> Device:
    """Add (or update) a speaker. Its new area and, for a known speaker, its current one must lie in
    the user's area: an operator neither places nor takes away another area's speakers."""
    access.require_role(user, Role.operator)
    access.require_area(user, device_in.area_code)
    with transaction(session):
        if device_service.get(session=session, device_id=device_in.id) is not None:
            device_in_scope(session=session, user=user, device_id=device_in.id)
        device = device_service.register(
            session=session, device_id=device_in.id, name=device_in.name, area_code=device_in.area_code,
            model=device_in.model,
        )  # fmt: skip
    return device


def issue_credentials(*, session: Session, user: User, device_id: str) -> tuple[str, str]:
    """A new MQTT password for the speaker (returned once): (user name, password)."""
    access.require_role(user, Role.operator)
    with transaction(session):
        device_in_scope(session=session, user=user, device_id=device_id)
        return credentials.issue(session=session, device_id=device_id)


# ------------------------------------------------------------------ from the command line (the
# machine's operator: no role to check)


def register_simulated(*, session: Session, per_village: int) -> list[tuple[str, str]]:
    """Register `per_village` simulated speakers in every village; return (device id, area code)s."""
    with transaction(session):
        devices = device_service.ensure_simulated(session=session, per_village=per_village)
        return [(d.id, d.area_code) for d in devices]


def register_simulated_with_passwords(
    *, session: Session, per_village: int
) -> list[tuple[str, str, str]]:
    """Register `per_village` simulated speakers in every village and give each a new MQTT password;
    return (device id, area code, password)s. The passwords are shown once (to the simulator)."""
    with transaction(session):
        devices = device_service.ensure_simulated(session=session, per_village=per_village)
        return [(d.id, d.area_code, credentials.issue(session=session, device_id=d.id)[1]) for d in devices]


def issue_passwords(*, session: Session, device_ids: list[str], missing: bool) -> list[tuple[str, str, str]]:
    """New MQTT passwords for these speakers (and, with `missing`, every one without one):
    (device id, user name, password) each, shown once."""
    with transaction(session):
        ids = list(device_ids)
        if missing:
            ids += session.scalars(select(Device.id).where(Device.secret_hash.is_(None)).order_by(Device.id))
        return [(d, *credentials.issue(session=session, device_id=d)) for d in ids]
