"""The console under its Content-Security-Policy: no page breaks a rule (no inline script left),
and what used to be inline handlers (the area picker, the print button) still work."""

from __future__ import annotations

import pytest

from tests.web.conftest import login, new_page

pytestmark = pytest.mark.slow


def test_console_pages_break_no_csp_rule_and_the_area_picker_still_submits(console, browser):
    server, fleet = console
    context, page = new_page(browser, server.base_url)
    violations: list[str] = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    login(page, "operator1")
    for path in (
        "/console",
        f"/console/fleet?area={fleet.target}",
        f"/console/schedule?area={fleet.target}",
        f"/console/qr/{fleet.target}",
        "/console/compose",
        f"/console/reports?area={fleet.target}",
        "/console/items/999999",  # the error page and its "back" link
        f"/v/{sorted(fleet.devices.values())[0]}",
    ):
        response = page.goto(path)
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"], path
    assert violations == []

    # The area picker submits on change through app.js (it was an inline onchange).
    page.goto(f"/console/fleet?area={fleet.target}")
    village = page.eval_on_selector(
        'select[name="area"]', "s => Array.from(s.options).map(o => o.value).filter(v => v !== s.value)[0]"
    )
    with page.expect_navigation():
        page.select_option('select[name="area"]', village)
    assert f"area={village}" in page.url
    assert violations == []
    context.close()
