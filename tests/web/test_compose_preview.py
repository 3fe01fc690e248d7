"""The compose page airs what staff heard: preview with some settings, submit, and the broadcast's
audio is the previewed file, even after the online voice comes back; change the text after the
preview and the new text is what airs."""

from __future__ import annotations

import re

import edge_tts.communicate
import edge_tts.voices
import pytest

from tests.api.conftest import ADMIN
from tests.tts.fake_edge import FakeEdge
from tests.web.conftest import login, new_page
from tts import edge

pytestmark = pytest.mark.slow

NOTICE = "各位村民请注意，明天上午八点到十二点停水检修，请提前储水。"


def _compose(page, fleet, text: str) -> None:
    page.goto("/console/compose")
    page.fill('input[name="title"]', "停水通知")
    page.fill('textarea[name="text"]', text)
    page.select_option('select[name="rate"]', "-10")
    page.select_option('select[name="repeat"]', "2")
    page.check('input[name="chime"]')
    page.locator(f'input[name="areas"][value="{fleet.target}"]').check()


def _preview(page) -> dict:
    with page.expect_response("**/console/preview") as answer:
        page.click("#preview-btn")
    page.wait_for_function(
        "() => document.querySelector('#preview-status').textContent.includes('时长')", timeout=30_000
    )
    return answer.value.json()


def _submit(page) -> int:
    page.click("#submit-btn")
    page.wait_for_url(re.compile(r"/console/items/\d+"))
    return int(page.url.split("/items/")[1].split("?")[0])


def test_submitting_after_a_preview_airs_the_previewed_audio(
    console, browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, fleet = console
    ctx, page = new_page(browser, server.base_url)
    login(page, "staff1")

    # offline: the default (online) voice falls back to espeak for the preview
    _compose(page, fleet, NOTICE)
    heard = _preview(page)
    assert heard["engine"] == "espeak" and heard["fallback"]
    assert page.input_value("#previewed-asset-id") == str(heard["asset_id"])

    with FakeEdge() as fake, server.client(server.login(*ADMIN)) as admin:
        monkeypatch.setattr(edge_tts.communicate, "WSS_URL", fake.wss_url)
        monkeypatch.setattr(edge_tts.voices, "VOICE_LIST", fake.voices_url)
        edge.reset_health()  # the online voice works again before staff press submit

        first = admin.get(f"/api/v1/broadcasts/{_submit(page)}").json()
        assert first["asset_id"] == heard["asset_id"]
        assert fake.requests == []  # not synthesised again: what was heard is what is approved

        # preview again (now by the online voice), then edit the notice: the edited text airs
        _compose(page, fleet, NOTICE)
        online = _preview(page)
        assert online["engine"] == "edge" and online["asset_id"] != heard["asset_id"]
        assert page.input_value("#previewed-asset-id") == str(online["asset_id"])
        page.fill('textarea[name="text"]', NOTICE + "谢谢配合。")
        second = admin.get(f"/api/v1/broadcasts/{_submit(page)}").json()
        assert second["text"] == NOTICE + "谢谢配合。"
        assert second["asset_id"] not in (None, heard["asset_id"], online["asset_id"])
        assert len(fake.requests) == 2  # the second preview, and the edited notice
    ctx.close()
