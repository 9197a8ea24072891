"""The technicians' patient pages on a phone: Debian's Chromium (Playwright) at
375 x 812 against the page served over real HTTP.

Every page must fit the screen (no horizontal scrolling) with touch targets of at
least 44 x 44 px, and the flows work by tapping: start a patient from the worklist
(look-alikes told apart), a scan from a keyboard wedge (text + Enter), choose a
lesion by tapping the body map, flag the session, End; assign held captures; move an
unsent capture (confirmed, audited); flag a capture and reveal it with a reason.

The desk is tests.support.desk.MemoryDesk until the context stage is on main. The
screenshots for the README are taken here: with ``DERMGATE_UPDATE_SCREENSHOTS=1``
they replace docs/img/phone-*.png (otherwise they go to a temporary folder).
Chromium missing makes this test fail, never skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from aiohttp import web
from playwright.sync_api import Page, expect, sync_playwright

from gateway.context.desk import HeldView
from gateway.core.capture import Laterality
from gateway.status.web.server import WebServer
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, PHONE, phone_problems
from tests.support.desk import MemoryDesk
from tests.support.paths import REPO_ROOT
from tests.support.web import PASSWORD, SEEDED_NAME, add_user, seed_spool, web_config

DOC_IMAGES = REPO_ROOT / "docs" / "img"


@contextlib.contextmanager
def serving(server: WebServer) -> Iterator[str]:
    """Serve ``server``'s app from a thread with its own event loop; yield its URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=1.0)
    host, port = server.web.host_port()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, host, port).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="page")
    thread.start()
    assert ready.wait(30), "the page did not start"
    try:
        yield f"http://{host}:{port}"
    finally:
        loop.call_soon_threadsafe(server._closing.set)  # ends the live overview streams
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


def _fits(page: Page, what: str) -> None:
    problems = phone_problems(page)
    assert not problems, f"{what}: {problems}"


def test_patient_pages_on_a_phone(tmp_path: Path) -> None:
    assert CHROMIUM.exists(), "Debian's chromium is missing: run scripts/setup.sh --test"
    config = web_config(tmp_path)
    add_user(config)
    wrapped, _ = seed_spool(config)
    desk = MemoryDesk(["dermatoscope", "scanner"])
    for sid, minute in ((101, 2), (102, 3)):
        desk.held_views[sid] = HeldView(
            sid, "scanner", f"2026-12-06 09:0{minute}", "no patient session on scanner", None
        )
    server = WebServer(config, desk=desk)
    update = os.environ.get("DERMGATE_UPDATE_SCREENSHOTS") == "1"
    shots = DOC_IMAGES if update else tmp_path / "img"
    shots.mkdir(parents=True, exist_ok=True)

    with serving(server) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport=PHONE, device_scale_factor=1, has_touch=True)
            page.goto(base + "/")
            _fits(page, "login")
            page.fill('input[name="user"]', "tech")
            page.fill('input[name="password"]', PASSWORD)
            page.click('button[type="submit"]')
            expect(page).to_have_url(base + "/")
            expect(page.locator("#sessions")).to_contain_text("No patient")
            _fits(page, "overview")

            # Start a patient from the worklist: the two Anna Müllers told apart.
            card = page.locator('.device-session[data-device="dermatoscope"]')
            card.get_by_text("Start a patient").tap()
            expect(page.locator("h2")).to_have_text("Start a patient on dermatoscope")
            _fits(page, "start a patient")
            page.fill('input[name="q"]', "müller")
            page.get_by_role("button", name="Search").tap()
            picks = page.locator("#worklist button.pick")
            expect(picks).to_have_count(2)
            expect(picks.nth(0)).to_contain_text("born 1980-01-01")
            expect(picks.nth(1)).to_contain_text("born 1980-01-10")
            _fits(page, "worklist search")
            page.screenshot(path=str(shots / "phone-start.png"))
            picks.nth(1).tap()
            expect(page.locator(".session")).to_contain_text("PID002")
            _fits(page, "session")

            # A lesion by tapping the body map (the left upper back), then confirm.
            page.locator("#add-lesion").tap()
            expect(page).to_have_url(f"{base}/sessions/1/lesion")
            _fits(page, "lesion: body map")
            page.screenshot(path=str(shots / "phone-body-map.png"))
            page.locator('a.bm-region[data-key="back-upper-back-L"]').tap()
            expect(page.locator("#new-lesion")).to_contain_text("Skin of back of upper thoracic")
            expect(page.locator('select[name="laterality"]')).to_have_value("L")
            _fits(page, "lesion: confirm")
            page.fill('input[name="description"]', "below left shoulder blade")
            page.locator("#add").tap()
            expect(page.locator("#current-lesion")).to_contain_text("L01")
            expect(page.locator("#current-lesion")).to_contain_text("upper thoracic region · left")
            assert desk.assigned == {}
            lesion = desk.view(1).lesion
            assert lesion is not None
            assert lesion.site == "699893008"
            assert lesion.laterality is Laterality.LEFT
            assert lesion.description == "below left shoulder blade"

            # Flag the session as sensitive.
            page.locator("#sensitive").tap()
            expect(page.locator("#sensitive")).to_contain_text("Sensitive: on")
            _fits(page, "session, flagged")
            page.screenshot(path=str(shots / "phone-session.png"))

            # The overview shows the patient with "End"; End closes it.
            page.goto(base + "/")
            card = page.locator('.device-session[data-device="dermatoscope"]')
            expect(card).to_contain_text("Müller, Anna")
            expect(card).to_contain_text("Dermoscopy follow-up")
            _fits(page, "overview with a patient")
            page.screenshot(path=str(shots / "phone-overview.png"))

            # A keyboard-wedge scan on the scanner: the code typed, then Enter.
            scanner = page.locator('.device-session[data-device="scanner"]')
            scanner.get_by_text("Start a patient").tap()
            page.locator("#scan").press_sequentially("ACC1003")
            page.locator("#scan").press("Enter")
            expect(page.locator(".session")).to_contain_text("PID003")

            # Held captures: tick both, assign them to the scanner's patient at once.
            page.goto(base + "/held")
            expect(page.locator("label.check")).to_have_count(2)
            _fits(page, "held")
            page.locator('label.check[data-id="101"]').tap()
            page.locator('label.check[data-id="102"]').tap()
            page.screenshot(path=str(shots / "phone-held.png"))
            page.locator("button.assign", has_text="Ødegård").tap()
            expect(page.locator(".notice")).to_contain_text("2 capture(s) assigned")
            assert desk.assigned == {101: 2, 102: 2}

            # Move an unsent capture of the scanner's session to the dermatoscope's.
            with sqlite3.connect(config.ledger_path()) as conn:  # as intake binds it
                conn.execute("UPDATE captures SET session_id = 2 WHERE id = ?", (wrapped,))
            page.goto(f"{base}/sessions/2/move")
            _fits(page, "move")
            page.get_by_role("button", name="Move…").tap()
            expect(page.locator(".confirm")).to_contain_text("Please confirm")
            _fits(page, "move: confirm")
            page.locator("#confirm").tap()
            expect(page).to_have_url(f"{base}/sessions/1")
            assert desk.assigned[wrapped] == 1

            # End the dermatoscope's patient from the overview.
            page.goto(base + "/")
            page.locator('.device-session[data-device="dermatoscope"] button.danger').tap()
            expect(page.locator('.device-session[data-device="dermatoscope"]')).to_contain_text(
                "No patient"
            )

            # Flag a capture, then reveal it: a reason category first.
            page.goto(f"{base}/spool/{wrapped}")
            page.locator("#flag").tap()
            expect(page.locator("#sensitive-mark")).to_be_visible()
            _fits(page, "capture, flagged")
            page.goto(f"{base}/spool")
            expect(page.locator(f'tr[data-id="{wrapped}"] .sensitive')).to_be_visible()
            _fits(page, "spool")
            page.goto(f"{base}/spool/{wrapped}")
            page.get_by_label("Quality control").check()
            page.locator("#reveal").tap()
            expect(page.locator("#patient td").first).to_have_class("revealed")
            expect(page.locator("#patient")).to_contain_text(SEEDED_NAME)
        finally:
            browser.close()

    lines = server.audit.path.read_text(encoding="ascii").splitlines()
    assert len(lines) == 2
    assert re.fullmatch(rf"\S+Z user=tech action=move spool_id={wrapped} from_session=2 "
                        r"to_session=1", lines[0])  # fmt: skip
    assert lines[1].endswith(f"action=reveal spool_id={wrapped} reason=quality_control")
    for shot in ("phone-start", "phone-body-map", "phone-session", "phone-overview", "phone-held"):
        data = (shots / f"{shot}.png").read_bytes()
        assert data.startswith(b"\x89PNG")
        assert len(data) < 200_000
