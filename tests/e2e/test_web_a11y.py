"""Every status page at 375 x 812 (a phone) and 1280 x 800 (a desk) in Debian's
Chromium (Playwright) against a real ``dermgate run``: simulated dermatoscope on a
pty, real Orthanc, one capture that is not a JPEG (set aside) and two delivered.

Each page (login, overview, "Why isn't it sending?", spool, a capture set aside, its
retry and resolve confirmations, a delivered capture, held captures, starting a
patient) at both sizes: no horizontal
scrolling, touch targets of at least 44 px, no serious or critical axe-core
violation (WCAG 2.1 A/AA and best practices: contrast, labels, names, landmarks…).
The header names the box and the version and says how fresh the page is; the
verdict is a polite live region that live updates change in place; the capture set aside says what to do next, and its
file can be downloaded: audited first, refused without a login, without the page's
CSRF token and when the audit log cannot be written.

With ``DERMGATE_UPDATE_SCREENSHOTS=1`` the phone-size screenshots replace
docs/img/phone-status-*.png (otherwise they go to a temporary folder).
Chromium missing makes this test fail, never skip.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

from gateway.demo.local_orthanc import OrthancProcess, free_port
from gateway.status.web.next_step import DAMAGED
from tests.e2e.test_web_browser import _add_user, _login
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, page_problems
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.paths import REPO_ROOT
from tests.support.simulator import SimulatorProcess
from tests.support.state import ledger_rows, states
from tests.support.waiting import wait_for

DOC_IMAGES = REPO_ROOT / "docs" / "img"


def _check(page: Page, what: str) -> None:
    problems = page_problems(page)
    assert not problems, f"{what} at {page.viewport_size}: " + "\n".join(problems)


def test_every_page_on_a_phone_and_a_desk(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    assert CHROMIUM.exists(), "Debian's chromium is missing: run scripts/setup.sh --test"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = gateway_config(tmp_path, pacs_port=orthanc.dicom_port, commit_via=orthanc)
    with config.open("a", encoding="utf-8") as fh:
        fh.write(f'\n[web]\nlisten = "127.0.0.1:{port}"\n')
    _add_user(config)
    sim = simulator_factory("--captures", "3", "--interval", "0.2", "--fault", "not-jpeg")
    gateway = gateway_factory(config)
    state_dir = tmp_path / "state"
    assert sim.wait(180) == 0, gateway.log()
    wait_for(
        lambda: sorted(states(state_dir)) == ["COMMITTED", "COMMITTED", "QUARANTINED"],
        90,
        "2 captures COMMITTED and 1 QUARANTINED",
    )
    rows = ledger_rows(state_dir)
    quarantined = next(r for r in rows if r["state"] == "QUARANTINED")
    delivered = next(r for r in rows if r["state"] == "COMMITTED")
    q, d = quarantined["id"], delivered["id"]
    raw_file = state_dir / "spool" / "raw" / quarantined["raw_name"]
    audit = state_dir / "web" / "audit.log"

    update = os.environ.get("DERMGATE_UPDATE_SCREENSHOTS") == "1"
    shots = DOC_IMAGES if update else tmp_path / "img"
    shots.mkdir(parents=True, exist_ok=True)
    pages = {
        "overview": "/",
        "why": "/why",
        "spool": "/spool",
        "capture set aside": f"/spool/{q}",
        "retry confirmation": f"/spool/{q}/retry",
        "resolve confirmation": f"/spool/{q}/resolve",
        "delivered capture": f"/spool/{d}",
        "held captures": "/held",
        "start a patient": "/devices/scope/start",
    }
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport=PHONE, device_scale_factor=1, has_touch=True)
            page = context.new_page()
            page.goto(base + "/login")
            expect(page.locator("#box-id")).to_have_text("Box test-box-01")
            expect(page.locator("#version")).to_have_count(0)  # no release to strangers
            _check(page, "login")
            page.set_viewport_size(DESKTOP)
            _check(page, "login")
            _login(page, base)

            # The header: which box, which DermGate, how fresh (ticking with JavaScript).
            expect(page.locator("#box-id")).to_have_text("Box test-box-01")
            expect(page.locator("#version")).to_have_text(f"DermGate {version('dermgate')}")
            expect(page.locator("#updated")).to_have_text(re.compile(r"^updated \d+ s ago$"))
            verdict = page.locator("#verdict")
            expect(verdict).to_have_attribute("aria-live", "polite")
            expect(verdict).to_have_attribute("data-verdict", "amber")
            for size in (PHONE, DESKTOP):
                page.set_viewport_size(size)
                for what, path in pages.items():
                    page.goto(base + path)
                    expect(page.locator("main h2").first).to_be_visible()
                    _check(page, what)

            # At phone size: tables are cards, the capture says what to do next.
            page.set_viewport_size(PHONE)
            page.goto(base + "/")
            expect(page.locator("#delivered")).to_have_text("2")
            assert page.locator("tr.head").first.is_hidden(), "table headers become labels"
            page.screenshot(path=str(shots / "phone-status-overview.png"))
            page.goto(base + "/why")
            expect(page.locator("#why")).to_contain_text("Answers a DICOM echo")
            page.screenshot(path=str(shots / "phone-status-why.png"))
            page.goto(f"{base}/spool/{q}")
            expect(page.locator("#next-step")).to_contain_text(DAMAGED)
            expect(page.locator("#download")).to_contain_text("device's original file")
            page.screenshot(path=str(shots / "phone-status-capture.png"))
            page.goto(f"{base}/spool/{d}")
            expect(page.locator("#next-step")).to_have_count(0)
            expect(page.locator("#download")).to_have_count(0)  # only set aside ones

            # The download: the device's file as it came, under a name without patient data.
            page.goto(f"{base}/spool/{q}")
            assert not audit.exists()
            with page.expect_download() as info:
                page.locator("#download").tap()
            download = info.value
            assert download.suggested_filename == f"dermgate-capture-{q}.jpg"
            saved = tmp_path / "downloaded"
            download.save_as(saved)
            assert saved.read_bytes() == raw_file.read_bytes()
            lines = audit.read_text(encoding="ascii").splitlines()
            assert len(lines) == 1
            assert re.fullmatch(
                rf"\S+Z user=tech action=download spool_id={q} kind=raw", lines[0]
            ), lines[0]

            # Not from another site (no CSRF token), not without a login.
            answer = page.request.post(f"{base}/spool/{q}/download", form={"csrf": "forged"})
            assert answer.status == 403
            assert "attachment" not in answer.headers.get("content-disposition", "")
            stranger = browser.new_context()
            answer = stranger.request.post(f"{base}/spool/{q}/download", max_redirects=0)
            assert answer.status == 401
            assert answer.body() != raw_file.read_bytes()
            stranger.close()

            # The audit log cannot be written: no file, the page says why.
            shutil.move(audit, tmp_path / "audit.log.kept")
            audit.mkdir()
            page.goto(f"{base}/spool/{q}")
            page.locator("#download").tap()
            expect(page.locator("main h2")).to_have_text("Refused")
            expect(page.locator("main")).to_contain_text("audit log cannot be written")
            _check(page, "refused download")
            assert list(audit.iterdir()) == []

            # The live verdict: resolved elsewhere, the overview turns green in place (the
            # same aria-live element, so a screen reader announces the change once).
            page.goto(base + "/")
            expect(page.locator("#verdict")).to_have_attribute("data-verdict", "amber")
            page.evaluate("document.getElementById('verdict').dataset.kept = 'yes'")
            other = context.new_page()
            other.goto(f"{base}/spool/{q}/resolve")
            other.locator("#confirm").click()
            expect(other.locator(".notice")).to_contain_text("marked as resolved")
            expect(page.locator("#verdict")).to_have_attribute("data-verdict", "green")
            expect(page.locator("#verdict")).to_have_attribute("data-kept", "yes")
            expect(page.locator("#verdict")).to_have_attribute("aria-live", "polite")
        finally:
            browser.close()

    assert gateway.stop(timeout=30) == 0
    for shot in ("phone-status-overview", "phone-status-why", "phone-status-capture"):
        data = (shots / f"{shot}.png").read_bytes()
        assert data.startswith(b"\x89PNG")
        assert len(data) < 300_000
