"""The audit log: every decision about a broadcast, playlist or area, with who, when and why."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import User
from scheduler.models import AuditEntry


def record(
    *,
    session: Session,
    user: User | None,
    action: str,
    object_type: str,
    object_id: int | str,
    comment: str | None = None,
    detail: dict | None = None,
) -> AuditEntry:
    """Append one entry (flushed with the caller's transaction, so it commits with the change)."""
    entry = AuditEntry(
        user_id=user.id if user is not None else None,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        comment=comment,
        detail=detail,
    )
    session.add(entry)
    return entry


def history(*, session: Session, object_type: str, object_id: int | str) -> list[AuditEntry]:
    """Entries about one object, oldest first."""
    query = (
        select(AuditEntry)
        .where(AuditEntry.object_type == object_type, AuditEntry.object_id == str(object_id))
        .order_by(AuditEntry.id)
    )
    return list(session.scalars(query).all())
