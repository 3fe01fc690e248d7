"""The console in a real browser (headless chromium): compose and preview, approval by a second
person, airing to simulated speakers, the reach report against a hand count, exports, the public
village page on a phone, region scoping, and an expired login that keeps what was typed."""

from __future__ import annotations

import calendar
import re
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from openpyxl import load_workbook

from core.clock import utcnow
from devices import simulate
from tests.api.conftest import ADMIN
from tests.live import LiveSpeakers, server_keys
from tests.web.conftest import PASSWORD, PHONE, login, new_page

pytestmark = pytest.mark.slow

NOTICE = "各位村民请注意，明天上午八点到十二点停水检修，请提前储水。"


def behaviour_of(device_id: str, villages: list[str]) -> str:
    """Village by village: the first speaker of every 3rd village fails, of every 4th (from the
    second) stays silent; every second speaker plays."""
    index = villages.index(device_id.rsplit("-", 1)[0])
    first = device_id.endswith("-1")
    if first and index % 3 == 0:
        return "fail"
    if first and index % 4 == 1:
        return "silent"
    return "ok"


def wait_final(client: httpx.Client, broadcast_id: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reach = client.get(f"/api/v1/broadcasts/{broadcast_id}/reach").json()
        if reach["final"]:
            return reach
        time.sleep(0.25)
    raise AssertionError(f"reach not final after {timeout} s: {reach}")


def wait_answered(client: httpx.Client, command_id: int, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = client.get(f"/api/v1/devices/commands/{command_id}").json()
        if outcome["answered"]:
            return outcome
        time.sleep(0.25)
    raise AssertionError(f"command {command_id} not answered after {timeout} s: {outcome}")


def chart(page) -> tuple[list[tuple[str, dict]], list[tuple[int, int]]]:
    """What the period report's charts show, once drawn from the API: per area its segments
    (played, failed, no_report, other -> count) and per day (targeted, played)."""
    page.wait_for_selector('#reach-charts[data-state="drawn"]')
    bars = page.eval_on_selector_all(
        "#chart-areas g.bar",
        "gs => gs.map(g => [g.dataset.code, Object.fromEntries("
        "Array.from(g.querySelectorAll('rect')).map(r => [r.dataset.key, Number(r.dataset.n)]))])",
    )
    days = page.eval_on_selector_all(
        "#chart-days g.day", "gs => gs.map(g => [Number(g.dataset.targeted), Number(g.dataset.played)])"
    )
    return [(code, segments) for code, segments in bars], [tuple(d) for d in days]


def cells(page, selector: str) -> list[list[str]]:
    return page.eval_on_selector_all(
        f"{selector} tr", "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent.trim()))"
    )


def shot(page, artifacts, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def test_compose_approve_air_report_export_and_public_page(
    console, browser, artifacts, embedded_broker_url, tmp_path
):
    server, fleet = console
    villages = sorted({v for v in fleet.devices.values() if v.startswith(fleet.target[:9])})
    behaviours = {
        d: behaviour_of(d, villages) if v.startswith(fleet.target[:9]) else "ok"
        for d, v in fleet.devices.items()
    }
    specs = [
        simulate.SpeakerSpec(device_id=d, area_code=v, behaviour=behaviours[d])
        for d, v in sorted(fleet.devices.items())
    ]
    township_name = fleet.names[fleet.target]

    with LiveSpeakers(
        specs, embedded_broker_url, tmp_path / "speaker-cache", trusted_keys=server_keys(server.settings)
    ):
        # --- staff: compose, preview, pick the township by searching, submit
        staff_ctx, page = new_page(browser, server.base_url)
        login(page, "staff1")
        page.goto("/console/compose")
        page.fill('input[name="title"]', "停水通知")
        page.fill('textarea[name="text"]', NOTICE)
        page.select_option('select[name="voice"]', "cmn")
        page.select_option('select[name="rate"]', "-10")
        page.click("#preview-btn")
        page.wait_for_function(
            "() => document.querySelector('#preview-status').textContent.includes('时长')", timeout=30_000
        )
        page.wait_for_function(
            "() => document.querySelector('#preview-audio').readyState >= 1", timeout=10_000
        )
        assert page.eval_on_selector("#preview-audio", "a => a.duration") > 1.0
        assert re.search(r"/media/[0-9a-f]{64}\.mp3$", page.get_attribute("#preview-audio", "src"))
        page.fill("#area-search", township_name[:2])
        township_box = page.locator(f'input[name="areas"][value="{fleet.target}"]')
        assert township_box.is_visible()
        other_box = page.locator(f'input[name="areas"][value="{fleet.other}"]')
        assert not other_box.is_visible()  # staff of one township is offered only its own areas
        township_box.check()
        assert township_name in page.text_content("#area-picked")
        shot(page, artifacts, "01-compose")
        page.click("#submit-btn")
        page.wait_for_url(re.compile(r"/console/items/\d+"))
        broadcast_id = int(page.url.split("/items/")[1].split("?")[0])
        assert page.text_content("#item-state") == "待审核"
        page.goto("/console/items")
        assert "待审核" in page.text_content(f'tr[data-id="{broadcast_id}"]')
        shot(page, artifacts, "02-my-items")

        # --- a second person approves it from the queue, after listening
        appr_ctx, apage = new_page(browser, server.base_url)
        login(apage, "approver1")
        apage.goto("/console/queue")
        card = apage.locator(f'article.queue-item[data-id="{broadcast_id}"]')
        assert "停水通知" in card.text_content() and "staff1" in card.text_content()
        assert card.locator("audio").get_attribute("src").endswith(".mp3")
        shot(apage, artifacts, "03-approval-queue")
        card.locator('form.approve input[name="comment"]').fill("同意播出")
        card.locator("form.approve button").click()
        apage.wait_for_url(re.compile(r"/console/queue\?done=approved"))
        assert apage.locator(f'article.queue-item[data-id="{broadcast_id}"]').count() == 0

        # --- the speakers play it; wait until the figures are final
        with server.client(server.login(*ADMIN)) as admin:
            api_reach = wait_final(admin, broadcast_id)
            # a second broadcast, approved but airing tomorrow: never on the public page
            tomorrow = (utcnow() + timedelta(days=1)).replace(microsecond=0).isoformat()
            r = admin.post(
                "/api/v1/broadcasts",
                json={
                    "title": "明日会议通知",
                    "text": "明天开会。",
                    "areas": [fleet.target],
                    "start_at": tomorrow,
                    "voice": "cmn",
                },
            )
            assert r.status_code == 201, r.text

        # --- the operator's fleet page: counts per township, device history, test tone
        op_ctx, oppage = new_page(browser, server.base_url)
        login(oppage, "operator1")
        oppage.goto("/console/fleet")
        assert oppage.text_content("#fleet-total") == str(2 * len(villages))
        assert oppage.text_content("#fleet-online") == str(2 * len(villages))  # the speakers are up
        shot(oppage, artifacts, "09-fleet")
        device = f"{villages[1]}-2"
        oppage.goto(f"/console/fleet/{device}")
        assert "停水通知" in oppage.text_content("main") and "完整播放" in oppage.text_content("main")
        tone_button = oppage.locator("button", has_text="播放测试音")
        assert tone_button.count() == 1  # an operator of the township may send one
        tone_button.click()
        oppage.wait_for_url(re.compile(r"done=test_tone&command=\d+"))
        command_id = int(re.search(r"command=(\d+)", oppage.url).group(1))
        assert f"测试音指令已发送（指令编号 {command_id}）" in oppage.text_content("main")
        shot(oppage, artifacts, "10-device")
        # the command and the speaker's answer are recorded: the fleet API shows its outcome
        with server.client(server.login("operator1", PASSWORD)) as op:
            outcome = wait_answered(op, command_id)
        assert (outcome["type"], outcome["scope"], outcome["target"]) == ("test_tone", "device", device)
        assert outcome["sent"] and outcome["targeted"] == 1 and outcome["succeeded"] == 1
        assert [(r["device_id"], r["ok"]) for r in outcome["results"]] == [(device, True)]

    # --- hand count
    expected = {"played": 0, "failed": 0, "no_report": 0}
    per_village = {v: {"targeted": 0, "played": 0, "failed": 0, "no_report": 0} for v in villages}
    for device, b in behaviours.items():
        village = fleet.devices[device]
        if village not in per_village:
            continue
        state = {"ok": "played", "fail": "failed", "silent": "no_report"}[b]
        expected[state] += 1
        per_village[village]["targeted"] += 1
        per_village[village][state] += 1
    targeted = 2 * len(villages)
    reached_population = sum(fleet.population[v] for v, c in per_village.items() if c["played"])
    assert expected["failed"] > 0 and expected["no_report"] > 0
    assert (api_reach["targeted"], api_reach["played"]) == (targeted, expected["played"])

    # --- the broadcast's report page shows exactly the hand count
    page.goto(f"/console/items/{broadcast_id}/reach")
    kpi = {k: page.text_content(f"#k-{k}") for k in ("targeted", "played", "failed", "no_report", "pop")}
    assert kpi == {
        "targeted": str(targeted), "played": str(expected["played"]), "failed": str(expected["failed"]),
        "no_report": str(expected["no_report"]), "pop": str(reached_population),
    }  # fmt: skip
    rate = expected["played"] / targeted
    assert page.text_content("#k-rate") == f"{rate * 100:.1f}%"
    body = cells(page, ".reach-table tbody")
    assert [row[0] for row in body] == villages
    for row in body:
        c = per_village[row[0]]
        assert row[1] == fleet.names[row[0]]
        assert [int(x) for x in row[2:6]] == [c["targeted"], c["played"], c["failed"], c["no_report"]], row
        assert int(row[8]) == (fleet.population[row[0]] if c["played"] else 0)
    html_table = body + cells(page, ".reach-table tfoot")
    shot(page, artifacts, "04-broadcast-reach")

    # --- exports open with openpyxl / csv and match the table on the page
    with page.expect_download() as info:
        page.click("#export-xlsx")
    xlsx = tmp_path / "reach.xlsx"
    info.value.save_as(xlsx)
    sheet = load_workbook(xlsx).active
    rows = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert rows[0][:4] == ["区域代码", "区域", "目标喇叭", "完整播放"]
    assert len(rows) - 1 == len(html_table)
    for got, shown in zip(rows[1:], html_table, strict=True):
        assert str(got[0] or "") == shown[0] and got[1] == shown[1]
        assert [str(v) for v in got[2:6]] == shown[2:6]
        assert f"{got[6] * 100:.1f}%" == shown[6]
        assert [str(v) for v in got[7:9]] == shown[7:9]
    with page.expect_download() as info:
        page.click("#export-csv")
    csv_text = open(info.value.path(), encoding="utf-8-sig").read().splitlines()
    assert csv_text[0].startswith("区域代码,区域,目标喇叭") and len(csv_text) == len(html_table) + 1

    # --- the day, week and month reports count the same airing (from raw reports today); their
    # charts, drawn from GET /api/v1/reports/reach, show the figures of the table beside them
    for period in ("day", "week", "month"):
        page.goto(f"/console/reports?area={fleet.target}&period={period}")
        got = {k: page.text_content(f"#k-{k}") for k in ("targeted", "played", "failed", "no_report", "pop")}
        assert got == kpi, period
        bars, days = chart(page)
        table = cells(page, ".reach-table tbody")
        assert [code for code, _ in bars] == [row[0] for row in table] == villages, period
        for (code, segments), row in zip(bars, table, strict=True):
            assert sum(segments.values()) == int(row[2]), (period, code)
            shown = [segments.get(k, 0) for k in ("played", "failed", "no_report")]
            assert shown == [int(x) for x in row[3:6]], (period, code)
        if period == "day":
            assert days == [] and page.is_hidden("#chart-days-card")
        else:
            today = datetime.now(ZoneInfo(server.settings.scheduler.timezone)).date()
            assert len(days) == {"week": 7, "month": calendar.monthrange(today.year, today.month)[1]}[period]
            assert (sum(t for t, _ in days), sum(p for _, p in days)) == (targeted, expected["played"])
        if period == "week":
            shot(page, artifacts, "05-week-report")

    # --- the public village page, on a phone, shows the aired notice and nothing else
    village = villages[0]
    phone_ctx, phone = new_page(browser, server.base_url, viewport=PHONE)
    response = phone.goto(f"/v/{village}")
    assert response.status == 200 and "login" not in phone.url
    text = phone.text_content("main")
    assert "停水通知" in text and NOTICE in text
    assert "明日会议通知" not in text  # approved, not aired yet
    assert "staff1" not in phone.content() and "approver1" not in phone.content()
    assert phone.locator("article.announcement audio").count() == 1
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot(phone, artifacts, "06-village-phone")
    png = phone.request.get(f"/v/{village}/qr.png")
    assert png.status == 200 and png.body()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = phone.request.get(f"/v/{village}/qr.svg")
    assert svg.status == 200 and b"<svg" in svg.body()

    # --- the township's printable QR sheet: one code per village
    page.goto(f"/console/qr/{fleet.target}")
    assert page.locator(".qr-card svg").count() == len(villages)
    shot(page, artifacts, "07-qr-sheet")

    # --- the coming week: tomorrow's approved notice is on the township's schedule
    page.goto(f"/console/schedule?area={fleet.target}")
    assert "明日会议通知" in page.text_content("main")
    shot(page, artifacts, "14-schedule")

    # --- a staff member of another township: 403 pages, not 500 or empty
    other_ctx, opage = new_page(browser, server.base_url)
    login(opage, "otherstaff")
    for path in (f"/console/items/{broadcast_id}", f"/console/items/{broadcast_id}/reach",
                 f"/console/reports?area={fleet.target}", f"/console/fleet?area={fleet.target}"):  # fmt: skip
        response = opage.goto(path)
        assert response.status == 403, path
        assert "不在您的管辖范围内" in opage.text_content("main"), path
    shot(opage, artifacts, "08-forbidden")
    assert opage.goto(f"/console/items/{broadcast_id}/reach.xlsx").status == 403
    assert opage.request.get(f"/api/v1/reports/reach?area={fleet.target}").status == 403  # the charts' API

    for ctx in (staff_ctx, appr_ctx, phone_ctx, other_ctx, op_ctx):
        ctx.close()


def test_expired_login_keeps_the_typed_notice_and_forms_check_in_chinese(console, browser, artifacts):
    server, fleet = console
    ctx, page = new_page(browser, server.base_url)
    login(page, "staff1")
    page.goto("/console/compose")

    # the browser refuses an empty form with a Chinese message
    page.click("#submit-btn")
    assert page.eval_on_selector('input[name="title"]', "e => e.validationMessage") == "请填写标题"
    assert "/console/compose" in page.url

    # the server checks too (browser checks switched off), naming each field in Chinese
    page.eval_on_selector("#compose", "f => f.noValidate = true")
    page.check('input[name="mode"][value="daily"]')
    page.fill('input[name="times"]', "7点")
    page.click("#submit-btn")
    page.wait_for_load_state()
    errors = page.locator(".field-err").all_text_contents()
    assert "请填写标题。" in errors and "请填写广播正文。" in errors and "请至少选择一个播出区域。" in errors
    assert any("时间格式应为" in e for e in errors)
    shot(page, artifacts, "11-compose-errors")

    # the session is gone (expired / logged out elsewhere) while a notice is being typed
    page.goto("/console/compose")
    page.fill('input[name="title"]', "秋收防火提醒")
    page.fill('textarea[name="text"]', "秋收季节，请勿焚烧秸秆。")
    village = sorted(v for v in fleet.devices.values() if v.startswith(fleet.target[:9]))[0]
    page.fill("#area-search", fleet.names[village])
    page.check(f'input[name="areas"][value="{village}"]')
    ctx.clear_cookies()
    page.click("#submit-btn")
    page.wait_for_url(re.compile(r"/login\?next=/console/compose&expired=1"))
    assert "已保留" in page.text_content("#expired")
    shot(page, artifacts, "12-login-expired")
    page.fill('input[name="username"]', "staff1")
    page.fill('input[name="password"]', "web-password-1")
    page.click('button[type="submit"]')
    page.wait_for_url(re.compile(r"/console/compose$"))
    assert page.is_visible("#restored")
    assert page.input_value('input[name="title"]') == "秋收防火提醒"
    assert page.input_value('textarea[name="text"]') == "秋收季节，请勿焚烧秸秆。"
    assert page.is_checked(f'input[name="areas"][value="{village}"]')

    # a form post without the session's CSRF token is refused
    response = page.request.post("/console/compose", form={"title": "x", "text": "y", "areas": village})
    assert response.status == 403 and "安全校验" in response.text()

    # the session cookie is HttpOnly and SameSite=Lax (Secure is set when served over https)
    (cookie,) = [c for c in ctx.cookies() if c["name"] == "cx_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]

    # the restored notice is submitted; the approver rejects it, and must say why
    page.select_option('select[name="voice"]', "cmn")
    page.click("#submit-btn")
    page.wait_for_url(re.compile(r"/console/items/\d+"))
    broadcast_id = int(page.url.split("/items/")[1].split("?")[0])
    appr_ctx, apage = new_page(browser, server.base_url)
    login(apage, "approver1")
    apage.goto("/console/queue")
    card = apage.locator(f'article.queue-item[data-id="{broadcast_id}"]')
    card.locator("form.reject button").click()
    reason = card.locator('form.reject input[name="comment"]')
    assert reason.evaluate("e => e.validationMessage") == "驳回时请写明原因"
    reason.fill("村名写错了，请核对后重新提交")
    card.locator("form.reject button").click()
    apage.wait_for_url(re.compile(r"done=rejected"))
    page.goto(f"/console/items/{broadcast_id}")
    assert page.text_content("#item-state") == "已驳回"
    assert "村名写错了" in page.text_content("main")
    shot(page, artifacts, "13-rejected-item")
    appr_ctx.close()
    ctx.close()
