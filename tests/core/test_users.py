from __future__ import annotations

import pytest

from core import regions, users
from core.models import Role
from core.users import UserError

VILLAGE = "341225100201"


def test_create_and_authenticate(session):
    regions.load_demo(session=session)
    user = users.create_user(
        session=session, username="li.ming", password="村村响-2024", role="staff", area_code=VILLAGE
    )
    assert user.id is not None and user.role is Role.staff and user.area_code == VILLAGE
    assert user.password_hash != "村村响-2024"
    session.expunge_all()

    found = users.authenticate(session=session, username="li.ming", password="村村响-2024")
    assert found is not None and found.id == user.id
    assert users.authenticate(session=session, username="li.ming", password="wrong-password") is None
    assert users.authenticate(session=session, username="nobody", password="村村响-2024") is None
    assert users.get_by_username(session=session, username="li.ming").id == user.id


def test_inactive_user_cannot_log_in(session):
    user = users.create_user(session=session, username="admin", password="secret-123", role=Role.admin)
    user.is_active = False
    session.commit()
    assert users.authenticate(session=session, username="admin", password="secret-123") is None


def test_duplicate_username(session):
    users.create_user(session=session, username="wang_fang", password="fang-pass-1", role="approver")
    with pytest.raises(UserError, match="taken"):
        users.create_user(session=session, username="wang_fang", password="fang-pass-2", role="viewer")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"username": "ab"}, "username"),
        ({"username": "x" * 65}, "username"),
        ({"username": "张三"}, "username"),
        ({"username": "bad name"}, "username"),
        ({"password": "short"}, "at least 8"),
        ({"role": "superuser"}, "unknown role"),
        ({"area_code": "341225999201"}, "does not exist"),
    ],
)
def test_invalid_users_are_refused(session, kwargs, message):
    args = {"username": "valid_user", "password": "long-enough", "role": "staff", **kwargs}
    with pytest.raises(UserError, match=message):
        users.create_user(session=session, **args)
    assert users.get_by_username(session=session, username=args["username"]) is None


def test_set_password_replaces_the_old_one(session):
    users.create_user(session=session, username="admin", password="forgotten-1", role=Role.admin)
    users.set_password(session=session, username="admin", password="remembered-2")
    session.expunge_all()
    assert users.authenticate(session=session, username="admin", password="forgotten-1") is None
    assert users.authenticate(session=session, username="admin", password="remembered-2") is not None


def test_set_password_refuses_unknown_user_and_short_password(session):
    users.create_user(session=session, username="admin", password="kept-password", role=Role.admin)
    with pytest.raises(UserError, match="no user"):
        users.set_password(session=session, username="nobody", password="long-enough")
    with pytest.raises(UserError, match="at least 8"):
        users.set_password(session=session, username="admin", password="short")
    assert users.authenticate(session=session, username="admin", password="kept-password") is not None


@pytest.mark.parametrize(
    "password", ["password1", "Password123", "12345678", "qwerty123", "woaini1314", "Admin2024"]
)
def test_the_most_common_passwords_are_refused_at_creation_and_change(session, password):
    with pytest.raises(users.InvalidUser, match="common") as refused:
        users.create_user(session=session, username="zhao_lei", password=password, role="staff")
    assert refused.value.field == "password"
    assert users.get_by_username(session=session, username="zhao_lei") is None
    users.create_user(session=session, username="zhao_lei", password="铃声-晚上-7点", role="staff")
    with pytest.raises(users.InvalidUser, match="common"):
        users.set_password(session=session, username="zhao_lei", password=password)
    assert users.authenticate(session=session, username="zhao_lei", password="铃声-晚上-7点") is not None


def test_the_username_is_no_password(session):
    with pytest.raises(users.InvalidUser, match="common"):
        users.create_user(session=session, username="zhaolei88", password="ZHAOLEI88", role="staff")
