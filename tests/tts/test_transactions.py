"""Services flush, flows commit; the asset row is a cache entry that outlives the caller's transaction.

Real espeak-ng and ffmpeg, on SQLite and PostgreSQL. "No engine" below is a PATH without
espeak-ng (edge is offline in tests): a request that still succeeds was served from the cache.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.errors import Forbidden, InvalidInput
from core.models import Role, User
from core.settings import Settings
from tts import flows, service
from tts.exceptions import SynthesisFailed
from tts.models import AudioAsset
from tts.schemas import SpeechSettings

NOTICE = "各位村民请注意，明天上午九点在村委会召开村民大会。"
STAFF = User(id=1, username="staff", role=Role.staff, area_code=None)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


def _without_engines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "no-engines"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty))


def _marker(key: str) -> AudioAsset:
    """A row of the caller's own change (any table would do; this one needs no other rows)."""
    return AudioAsset(
        cache_key=key, sha256="0" * 64, size_bytes=1, duration_ms=1, engine="test", voice="", text="marker"
    )


def _count(factory: sessionmaker[Session], **where: str) -> int:
    query = select(func.count()).select_from(AudioAsset)
    for name, value in where.items():
        query = query.where(getattr(AudioAsset, name) == value)
    with factory() as fresh:
        return fresh.scalar(query) or 0


def test_synthesis_commits_nothing_of_the_callers_but_its_asset_survives_a_rollback(
    session_factory: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with session_factory() as caller:
        caller.add(_marker("caller-change"))  # the caller's own change, pending
        result = service.synthesize_sync(session=caller, settings=settings, text=NOTICE)
        assert result.asset in caller  # loaded in the caller's session, usable for its change
        asset_id = result.asset.id
        caller.rollback()  # e.g. the broadcast is refused after its audio was made

    assert _count(session_factory, cache_key="caller-change") == 0  # the service did not commit it
    assert _count(session_factory, id=asset_id) == 1  # the paid-for audio is kept
    _without_engines(tmp_path, monkeypatch)
    with session_factory() as again:
        cached = service.synthesize_sync(session=again, settings=settings, text=NOTICE)
    assert cached.cached and cached.asset.id == asset_id


def test_an_identical_request_finds_the_asset_while_the_first_callers_transaction_is_open(
    session_factory: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with session_factory() as first:
        made = service.synthesize_sync(session=first, settings=settings, text=NOTICE)
        assert first.in_transaction()  # not committed by the service
        _without_engines(tmp_path, monkeypatch)
        started = time.monotonic()
        with session_factory() as second:
            found = service.synthesize_sync(session=second, settings=settings, text=NOTICE)
        assert time.monotonic() - started < 2.0  # neither synthesised again nor waited for `first`
        assert found.cached and found.asset.id == made.asset.id


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_on_sqlite_a_caller_that_holds_the_write_lock_is_not_kept_waiting(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    """SQLite has one writer: the asset goes into the caller's transaction (a SAVEPOINT) instead."""
    with session_factory() as caller:
        caller.add(_marker("caller-change"))
        caller.flush()  # the caller has written: it holds SQLite's write lock
        started = time.monotonic()
        result = service.synthesize_sync(session=caller, settings=settings, text=NOTICE)
        assert time.monotonic() - started < 8.0  # far below the 10 s busy timeout
        assert _count(session_factory, id=result.asset.id) == 0  # durable with the caller's commit
        caller.commit()
    assert _count(session_factory, id=result.asset.id) == 1
    assert _count(session_factory, cache_key="caller-change") == 1


def test_preview_flow_commits_and_checks_the_role(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    with session_factory() as session:
        session.add(_marker("before-preview"))  # the flow commits the caller's session: the use case
        result = flows.preview(
            session=session, settings=settings, user=STAFF, text=NOTICE, speech=SpeechSettings.of(rate=-20)
        )
    assert _count(session_factory, id=result.asset.id) == 1
    assert _count(session_factory, cache_key="before-preview") == 1

    viewer = User(id=2, username="viewer", role=Role.viewer, area_code=None)
    with session_factory() as session, pytest.raises(Forbidden):
        flows.preview(session=session, settings=settings, user=viewer, text=NOTICE)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"rate": "-20%"}, "speech.rate"),  # the edge-tts string form where a number belongs
        ({"rate": 200}, "speech.rate"),
        ({"pitch": "+5Hz"}, "speech.pitch"),
        ({"volume": "+10%"}, "speech.volume"),
        ({"volume": 300}, "speech.volume"),
        ({"repeat": 0}, "speech.repeat"),
        ({"voice": "zh-CN-NoSuchNeural"}, "speech.voice"),
        ({"text": "。。。"}, "text"),
    ],
)
def test_bad_speech_input_is_invalid_input_never_a_bare_value_error(
    session_factory: sessionmaker[Session], settings: Settings, options: dict, field: str
) -> None:
    request = {"text": NOTICE, **options}
    with session_factory() as session:
        with pytest.raises(InvalidInput) as refused:
            service.synthesize_sync(session=session, settings=settings, **request)
        assert refused.value.field == field
        assert not isinstance(refused.value, ValueError)  # nobody needs `except ValueError`
        text = request.pop("text")
        with pytest.raises(InvalidInput):  # the same through the flow
            flows.preview(
                session=session, settings=settings, user=STAFF, text=text,
                speech=SpeechSettings.model_construct(**{**SpeechSettings().model_dump(), **request}),
            )  # fmt: skip
    assert _count(session_factory) == 0


def test_every_engine_failing_is_unavailable_and_stores_nothing(
    session_factory: sessionmaker[Session],
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _without_engines(tmp_path, monkeypatch)
    with session_factory() as session, pytest.raises(SynthesisFailed) as failed:
        flows.preview(session=session, settings=settings, user=STAFF, text=NOTICE)
    assert failed.value.reasons and _count(session_factory) == 0


def test_cleanup_flow_removes_files_only_after_the_rows_are_committed(
    session_factory: sessionmaker[Session], settings: Settings
) -> None:
    with session_factory() as session:
        made = flows.preview(session=session, settings=settings, user=STAFF, text=NOTICE)
        path, asset_id = made.path, made.asset.id
        plan = service.plan_cleanup(
            session=session, settings=settings, referenced_ids=(), min_age=timedelta(0)
        )
        assert plan.asset_ids == {asset_id} and plan.files == (path,)
        service.delete_assets(session=session, asset_ids=plan.asset_ids)
        session.rollback()  # the deletion did not happen: the file must still be there
    assert path.is_file() and _count(session_factory, id=asset_id) == 1

    with session_factory() as session:
        report = flows.cleanup(session=session, settings=settings, referenced_ids=(), min_age=timedelta(0))
    assert (report.assets_removed, report.files_removed) == (1, 1)
    assert not path.exists() and _count(session_factory) == 0
