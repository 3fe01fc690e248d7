"""Speech use cases: check who asks, call the verbs of `tts.service`, commit.

Every door (HTTP API, web console, CLI) calls one of these; none commits by itself. Nothing
leaves the process before the commit: a preview's URL is handed out only once its row is in.

Synthesis for a broadcast or a playlist is not a flow of its own: the scheduler's and the
playlists' flows call `tts.service.synthesize_sync` / `synthesize` (flush only; the asset row is
durable on its own, see `tts.service`) and commit with their own change.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from core.errors import Forbidden
from core.models import Role, User
from core.settings import Settings
from tts import service as tts_service
from tts.schemas import SpeechSettings

logger = logging.getLogger(__name__)

# Who makes audio (admin always may): the roles that write notices.
AUTHORS = (Role.staff, Role.approver)


def require_author(user: User) -> None:
    """Forbidden unless the user may make audio (staff, approver, admin)."""
    if user.role != Role.admin and user.role not in AUTHORS:
        raise Forbidden(
            f"role {user.role} may not do this; needs one of: admin, {', '.join(AUTHORS)}", reason="role"
        )


def preview(
    *,
    session: Session,
    settings: Settings,
    user: User,
    text: str,
    speech: SpeechSettings | None = None,
) -> tts_service.SynthesisResult:
    """Speak a notice for staff to hear (or find the identical one made before), and commit.

    ``speech`` is the one settings shape of previews, broadcasts and playlist text items: a
    broadcast of the same text with the same settings airs this asset (pass its id back as the
    broadcast's ``previewed_asset_id``). Raises TextError / SpeechInputError (InvalidInput),
    SynthesisFailed (Unavailable), Forbidden. From sync code only (see `tts.service`).
    """
    require_author(user)
    result = tts_service.synthesize_sync(
        session=session, settings=settings, text=text, **(speech or SpeechSettings()).options()
    )
    tts_service.grant(session=session, asset=result.asset, user=user)
    session.commit()
    return result


def upload(
    *,
    session: Session,
    settings: Settings,
    user: User,
    path: Path,
    title: str = "",
    volume: int = 0,
    repeat: int = 1,
    chime: bool = False,
    closing_chime: bool = False,
) -> tts_service.SynthesisResult:
    """Store a recorded announcement (a file the door has staged at path) normalised, and commit.

    Raises NotAudio (InvalidInput, field ``file``), SpeechInputError, AudioError (Unavailable), Forbidden.
    """
    require_author(user)
    result = tts_service.store_recording_sync(
        session=session, settings=settings, path=path, title=title, volume=volume, repeat=repeat,
        chime=chime, closing_chime=closing_chime,
    )  # fmt: skip
    tts_service.grant(session=session, asset=result.asset, user=user)
    session.commit()
    return result


def cleanup(
    *,
    session: Session,
    settings: Settings,
    referenced_ids: Collection[int],
    min_age: timedelta = timedelta(days=1),
    dry_run: bool = False,
) -> tts_service.CleanupReport:
    """Delete unused old assets (rows, committed) and then the files nobody names (operators' CLI).

    Files are removed only after the rows' deletion is committed: a failed commit leaves rows
    that still have their files.
    """
    plan = tts_service.plan_cleanup(
        session=session, settings=settings, referenced_ids=referenced_ids, min_age=min_age
    )
    if not dry_run:
        tts_service.delete_assets(session=session, asset_ids=plan.asset_ids)
        session.commit()
        tts_service.remove_files(plan=plan)
    report = plan.report()
    logger.info("audio cleanup%s: %s", " (dry run)" if dry_run else "", report)
    return report
