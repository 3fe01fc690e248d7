"""/api/v1/health shows the broker URL without any part of its user name or password."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from api.services import _redact
from cunxiang_shared.broker import parse_broker_url

PASSWORDS = ["p@ss", "a:b", "x/y", "50%off", "@:/%", "ss@host", "plain"]


@pytest.mark.parametrize("password", PASSWORDS)
def test_no_part_of_the_password_is_shown(password: str) -> None:
    url = f"mqtt://server-user:{quote(password, safe='')}@broker.example:8883"
    assert parse_broker_url(url).password == password  # the URL is one a client would accept
    shown = _redact(url)
    assert shown == "mqtt://***@broker.example:8883"


def test_a_literal_at_sign_left_unencoded_still_hides_everything_before_the_host() -> None:
    # urllib (and so paho's callers) take the host after the LAST `@`
    assert _redact("mqtt://user:p@ss@broker.example:1883") == "mqtt://***@broker.example:1883"


def test_urls_without_credentials_are_shown_as_they_are() -> None:
    assert _redact("mqtts://broker.example:8883") == "mqtts://broker.example:8883"
