"""Refusals of the registry, accounts, keys and imports are of the error family: their type alone
tells a door how to answer (404, 409, 422, 503), never their text."""

from __future__ import annotations

import pytest

from core import errors, regions, users
from core.models import Role
from devices import credentials, keys
from devices import service as device_service

VILLAGE = "341225100201"


def test_registry_and_credentials(session):
    regions.load_demo(session=session)
    with pytest.raises(errors.InvalidInput) as bad_id:
        device_service.register(session=session, device_id="有 空格", name="x", area_code=VILLAGE)
    with pytest.raises(errors.InvalidInput) as bad_area:
        device_service.register(session=session, device_id="d1", name="x", area_code="341225999201")
    assert (bad_id.value.field, bad_area.value.field) == ("id", "area_code")
    assert isinstance(bad_area.value, device_service.DeviceError)
    with pytest.raises(errors.NotFound):
        credentials.issue(session=session, device_id="nobody")


def test_accounts(session):
    regions.load_demo(session=session)
    users.create_user(session=session, username="admin", password="password-1", role=Role.admin)
    with pytest.raises(errors.Conflict):
        users.create_user(session=session, username="admin", password="password-2", role=Role.admin)
    with pytest.raises(errors.NotFound):
        users.set_password(session=session, username="nobody", password="password-3")
    with pytest.raises(errors.InvalidInput) as short:
        users.set_password(session=session, username="admin", password="short")
    assert short.value.field == "password" and isinstance(short.value, users.UserError)


def test_keys(tmp_path):
    with pytest.raises(errors.Conflict):
        keys.stage(tmp_path)  # no current key yet
    with pytest.raises(errors.Unavailable):
        keys.load(tmp_path).signer()
    keys.generate(tmp_path)
    keys.stage(tmp_path)
    with pytest.raises(keys.KeyStateConflict) as staged:
        keys.stage(tmp_path)
    assert isinstance(staged.value, keys.KeyStoreError) and staged.value.reason == "staged"


def test_region_import(session, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("code,name\n12,x\n", encoding="utf-8")
    with pytest.raises(errors.InvalidInput) as info:
        regions.import_file(session=session, path=path)
    assert info.value.field == "file" and info.value.errors[0][0] == 2
