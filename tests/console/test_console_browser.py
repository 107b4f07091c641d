"""The console in a real headless Chromium against a running daemon over 200 simulated miners.

Debian's ``chromium`` (installed by ``make chromium``) is driven by Playwright
for Python pointed at that binary; no browser is downloaded.  Screenshots of
every page go to ``$WATTMUX_SCREENSHOTS`` (default: the test's temporary folder).
axe-core (vendored, tests/console/vendor) runs inside every page.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler.api.auth import Role
from tests.console.site import AXE, RunningSite, chromium_path, running_site

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = chromium_path()
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed: run `make chromium`", allow_module_level=True)

TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSite]:
    with running_site(tmp_path_factory.mktemp("console"), "127.77.44.1", 200) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("WATTMUX_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_page(browser: Any) -> Any:
    # bypass_csp: the console's CSP forbids inline scripts, axe-core is injected as one.
    context = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return page


def log_in(page: Any, site: RunningSite, role: Role) -> None:
    page.goto(f"{site.url}/console#token={site.tokens[role]}")
    page.wait_for_selector("#nav:not([hidden])")
    assert f"({role.label})" in page.inner_text("#who")
    assert "token=" not in page.url  # the token leaves the address bar at once


def axe_problems(page: Any) -> list[str]:
    page.add_script_tag(content=AXE.read_text())
    result = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length}))"
    )
    return [json.dumps(v) for v in result if v["impact"] in ("serious", "critical")]


def count(page: Any, name: str) -> int:
    return int(page.inner_text(f"#count-{name}").replace(",", ""))


def test_wrong_token_cannot_log_in(site: RunningSite, browser: Any) -> None:
    page = new_page(browser)
    page.goto(f"{site.url}/console")
    page.fill("#token", "not-a-token-of-this-site")
    page.click("#login-form button")
    page.wait_for_selector("#login-error:has-text('Wrong token')")
    assert page.is_hidden("#nav")
    status = page.evaluate("async () => (await fetch('/console/api/fleet')).status")
    assert status == 401
    page.context.close()


def test_admin_sees_200_machines_and_a_confirmed_curtail_sleeps_them_live(
    site: RunningSite, browser: Any, shots: Path
) -> None:
    page = new_page(browser)
    log_in(page, site, Role.ADMIN)
    page.wait_for_function("document.getElementById('count-all')?.textContent === '200'")
    page.wait_for_function("document.getElementById('count-mining')?.textContent === '200'")
    assert axe_problems(page) == []
    page.screenshot(path=shots / "overview.png", full_page=True)

    page.fill("#curtail-kw", "500")
    page.fill("#curtail-min", "30")
    page.click("#curtail-preview")
    page.wait_for_selector("#curtail-preview-box:not([hidden])")
    text = page.inner_text("#curtail-preview-text")
    sleeping = int(re.search(r"puts (\d+) machines to sleep", text).group(1))  # type: ignore[union-attr]
    assert sleeping > 0, text
    assert count(page, "asleep") == 0  # a preview changes nothing
    page.screenshot(path=shots / "curtail-preview.png", full_page=True)
    page.click("#curtail-confirm")
    # No reload: the counts move as the daemon's updates arrive over the event stream.
    page.wait_for_function(
        "Number(document.getElementById('count-asleep')?.textContent) >= 1", timeout=TIMEOUT_MS
    )
    page.wait_for_selector("#ov-curtail:has-text('hold 500 kW')")
    assert "by admin-1" in page.inner_text("#ov-curtail")
    page.wait_for_function(
        "Number(document.getElementById('ov-power').textContent.replace(/[^0-9.]/g, '')) <= 500"
    )
    page.screenshot(path=shots / "overview-curtailed.png", full_page=True)
    page.click("#curtail-clear")
    page.wait_for_selector("#ov-curtail:has-text('none')")
    page.context.close()


def test_override_from_the_fleet_table_and_every_page_passes_axe(
    site: RunningSite, browser: Any, shots: Path
) -> None:
    page = new_page(browser)
    log_in(page, site, Role.OPERATOR)
    page.click("nav a[data-page=fleet]")
    page.wait_for_selector("#fleet-body tr[data-id]")
    assert "200 of 200 machines" in page.inner_text("#f-count")
    assert axe_problems(page) == []
    page.screenshot(path=shots / "fleet.png")
    page.select_option("#f-state", "mining")
    page.wait_for_selector("#f-count:has-text('200 of 200')")
    page.select_option("#f-state", "")
    page.fill("#f-text", "s21-007")
    page.wait_for_selector("#f-count:has-text('1 of 200')")
    page.click("button[aria-label='Override s21-007']")
    page.select_option("#ovr-workload", "sleep")
    page.fill("#ovr-note", "fan noise")
    page.click("#ovr-confirm")
    row = "#fleet-body tr[data-id='s21-007']"
    page.wait_for_selector(f"{row}:has-text('sleep by operator-1')")
    page.wait_for_selector(f"{row} .st-asleep")  # the miner reports sleep: pushed live
    page.fill("#f-text", "")
    page.select_option("#f-state", "mining")  # the filter follows the live state
    page.wait_for_selector("#f-count:has-text('199 of 200')")
    page.select_option("#f-state", "")
    page.fill("#f-text", "s21-007")

    page.click(f"{row} a")
    page.wait_for_selector("#m-now:has-text('operator override')")
    page.wait_for_selector("#m-history td:has-text('operator override')")
    assert axe_problems(page) == []
    page.screenshot(path=shots / "machine.png", full_page=True)
    page.click("nav a[data-page=map]")
    page.wait_for_selector("#map-note:has-text('10 racks, 200 machines placed')")
    assert axe_problems(page) == []
    page.screenshot(path=shots / "site-map.png", full_page=True)
    page.click("nav a[data-page=decisions]")
    page.wait_for_selector("#d-table td:has-text('operator override')")
    assert axe_problems(page) == []
    page.screenshot(path=shots / "decisions.png", full_page=True)
    page.click("nav a[data-page=audit]")
    page.wait_for_selector("#a-table td:has-text('PUT /v1/overrides/s21-007')")
    assert axe_problems(page) == []
    page.screenshot(path=shots / "audit.png", full_page=True)
    # An operator's change without the CSRF token is refused, with it accepted.
    forged = page.evaluate(
        "async () => (await fetch('/v1/overrides/s21-007', {method: 'DELETE'})).status"
    )
    assert forged == 403
    page.click("nav a[data-page=machine]") if page.is_visible("nav a[data-page=machine]") else None
    page.goto(f"{site.url}/console#/machine/s21-007")
    page.click("#m-clear")
    page.wait_for_selector("#m-now:has-text('Overridenone')", timeout=TIMEOUT_MS)
    page.context.close()


def test_viewer_sees_no_controls_and_a_forged_change_gets_403(
    site: RunningSite, browser: Any, shots: Path
) -> None:
    page = new_page(browser)
    log_in(page, site, Role.VIEWER)
    page.wait_for_function("document.getElementById('count-all')?.textContent === '200'")
    assert page.query_selector_all(".ctl, .admin, #curtail-form, #mode-form") == []
    page.click("nav a[data-page=fleet]")
    page.wait_for_selector("#fleet-body tr[data-id]")
    assert page.query_selector_all("button.row-override, #bulk-override") == []
    page.screenshot(path=shots / "fleet-viewer.png")
    forged = page.evaluate(
        """async () => {
            const me = await (await fetch('/console/api/me')).json();
            const r = await fetch('/v1/curtail', {method: 'PUT',
                headers: {'content-type': 'application/json', 'x-csrf-token': me.csrf},
                body: JSON.stringify({target_kw: 0, duration_seconds: 60})});
            return [r.status, (await r.json()).detail];
        }"""
    )
    assert forged[0] == 403, forged
    assert "viewer" in forged[1]
    # A forged POST (as a cross-site form would send it, the cookie but no CSRF token): 403.
    posted = page.evaluate(
        """async () => (await fetch('/v1/curtail', {method: 'POST',
            headers: {'content-type': 'text/plain'}, body: '{"target_kw": 0}'})).status"""
    )
    assert posted == 403
    page.click("#logout")
    page.wait_for_selector("#login-error:has-text('Logged out')")
    assert page.evaluate("async () => (await fetch('/console/api/me')).status") == 401
    page.fill("#token", site.tokens[Role.ADMIN])  # an admin on the same page gets the controls
    page.click("#login-form button")
    page.wait_for_selector("#bulk-override")  # the fleet page it was on, with its controls
    assert page.query_selector("#policy-form") is not None
    assert "(admin)" in page.inner_text("#who")
    page.context.close()


def test_a_session_expires_and_the_page_asks_to_log_in_again(browser: Any, tmp_path: Path) -> None:
    with running_site(tmp_path, "127.77.44.210", 20, session_seconds=2) as small:
        page = new_page(browser)
        log_in(page, small, Role.OPERATOR)
        page.wait_for_selector("#login-error:has-text('session has ended')", timeout=10_000)
        assert page.is_hidden("#nav")
        status = page.evaluate("async () => (await fetch('/console/api/fleet')).status")
        assert status == 401
        page.context.close()
