"""The technicians' patient pages on a phone: Debian's Chromium (Playwright) at
375 x 812 against the page served over real HTTP, on the real context stage
(tests.support.context.ContextRig: ledger, intake, wrapper, ContextStage).

Every page must fit the screen (no horizontal scrolling) with touch targets of at
least 44 x 44 px and pass axe-core (no serious or critical violation), on the phone
and on a desk's screen (1280 x 800), and the flows work by tapping: start a patient
from the worklist (look-alikes told apart), a scan from a keyboard wedge (text + Enter), choose a
lesion by tapping the body map, flag the session, End; assign held captures; move an
unsent capture (confirmed, audited); reveal a flagged capture with a reason.

The screenshots for the README are taken here: with ``DERMGATE_UPDATE_SCREENSHOTS=1``
they replace docs/img/phone-*.png (otherwise they go to a temporary folder).
Chromium missing makes this test fail, never skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from playwright.sync_api import Page, expect, sync_playwright

from gateway.core.capture import CaptureOffer, Laterality
from gateway.demo.local_orthanc import free_port
from gateway.status.web.server import WebServer
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, page_problems
from tests.support.context import CAMERA, ContextRig, item, jpeg
from tests.support.paths import REPO_ROOT
from tests.support.web import PASSWORD, add_user

DOC_IMAGES = REPO_ROOT / "docs" / "img"
T = TypeVar("T")


class Served:
    """The page and its context rig on a thread with their own event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, rig: ContextRig, server: WebServer) -> None:
        self.loop, self.rig, self.server = loop, rig, server

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the page's loop (the rig's objects belong to it)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)


@contextlib.contextmanager
def serving(build: Callable[[], Awaitable[tuple[ContextRig, WebServer]]]) -> Iterator[Served]:
    """Build the rig and the page on a thread of their own and serve the page."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    built: list[Served] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        rig, server = loop.run_until_complete(build())
        runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=1.0)
        loop.run_until_complete(runner.setup())
        host, port = server.web.host_port()
        loop.run_until_complete(web.TCPSite(runner, host, port).start())
        built.append(Served(loop, rig, server))
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        rig.close()
        loop.close()

    thread = threading.Thread(target=run, name="page")
    thread.start()
    assert ready.wait(60), "the page did not start"
    served = built[0]
    try:
        yield served
    finally:
        loop.call_soon_threadsafe(served.server._closing.set)  # ends live overview streams
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


def _fits(page: Page, what: str) -> None:
    """``page`` passes at phone size, then on a desk's screen (no horizontal scrolling,
    44 px targets, no serious axe-core violation); left at phone size."""
    for size in (DESKTOP, PHONE):
        problems = page_problems(page)
        assert not problems, f"{what} at {page.viewport_size}: {problems}"
        page.set_viewport_size(size)


def test_patient_pages_on_a_phone(tmp_path: Path) -> None:
    assert CHROMIUM.exists(), "Debian's chromium is missing: run scripts/setup.sh --test"

    async def build() -> tuple[ContextRig, WebServer]:
        web_section = f'\n[web]\nlisten = "127.0.0.1:{free_port()}"\n'
        rig = ContextRig(tmp_path, hold=3600, extra=web_section)
        rig.set_worklist([
            item(1, patient_id="PID001", name="Müller^Anna", accession="ACC1001",
                 study_uid="1.2.826.0.1.3680043.10.9.1", birth_date="19800101",
                 procedure="Mole check"),
            item(2, patient_id="PID002", name="Müller^Anna", accession="ACC1002",
                 study_uid="1.2.826.0.1.3680043.10.9.2", birth_date="19800110",
                 procedure="Dermoscopy follow-up"),
            item(3, patient_id="PID003", name="Ødegård^Jon", accession="ACC1003",
                 study_uid="1.2.826.0.1.3680043.10.9.3", birth_date="19550505", sex="M",
                 procedure="Total body photography"),
        ])  # fmt: skip
        add_user(rig.config)
        return rig, WebServer(rig.config, desk=rig.stage)

    update = os.environ.get("DERMGATE_UPDATE_SCREENSHOTS") == "1"
    shots = DOC_IMAGES if update else tmp_path / "img"
    shots.mkdir(parents=True, exist_ok=True)

    with serving(build) as served, sync_playwright() as pw:
        rig, server = served.rig, served.server
        host, port = server.web.host_port()
        base = f"http://{host}:{port}"
        # Two captures on the camera while nobody is open there: held.
        for n in (1, 2):
            offer = CaptureOffer(device_capture_id=f"held-{n}")
            served.run(rig.capture("camera", CAMERA, offer, jpeg(n)))
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
            card = page.locator('.device-session[data-device="scope"]')
            card.get_by_text("Start a patient").tap()
            expect(page.locator("h2")).to_have_text("Start a patient on scope")
            _fits(page, "start a patient")
            page.fill('input[name="q"]', "müller")
            page.get_by_role("button", name="Search").tap()
            picks = page.locator("#worklist button.pick")
            expect(picks).to_have_count(2)
            expect(picks.nth(0)).to_contain_text("born 1980-01-01")
            expect(picks.nth(1)).to_contain_text("born 1980-01-10")
            _fits(page, "worklist search")
            page.screenshot(path=str(shots / "phone-start.png"))
            picks.filter(has_text="PID002").tap()
            expect(page.locator(".session")).to_contain_text("PID002")
            first = int(page.url.rsplit("/", 1)[1])
            _fits(page, "session")

            # A lesion by tapping the body map (the left upper back), then confirm.
            page.locator("#add-lesion").tap()
            expect(page).to_have_url(f"{base}/sessions/{first}/lesion")
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
            lesion = served.run(rig.stage.session(first)).lesion
            assert lesion is not None
            assert lesion.site == "699893008"
            assert lesion.laterality is Laterality.LEFT

            # Flag the session as sensitive.
            page.locator("#sensitive").tap()
            expect(page.locator("#sensitive")).to_contain_text("Sensitive: on")
            _fits(page, "session, flagged")
            page.screenshot(path=str(shots / "phone-session.png"))

            # The overview shows the patient with "End".
            page.goto(base + "/")
            card = page.locator('.device-session[data-device="scope"]')
            expect(card).to_contain_text("Müller, Anna")
            expect(card).to_contain_text("Dermoscopy follow-up")
            _fits(page, "overview with a patient")
            page.screenshot(path=str(shots / "phone-overview.png"))

            # A keyboard-wedge scan on the camera: the code typed, then Enter.
            camera = page.locator('.device-session[data-device="camera"]')
            camera.get_by_text("Start a patient").tap()
            page.locator("#scan").press_sequentially("ACC1003")
            page.locator("#scan").press("Enter")
            expect(page.locator(".session")).to_contain_text("PID003")
            second = int(page.url.rsplit("/", 1)[1])

            # Held captures: tick both, assign them to the camera's patient at once.
            page.goto(base + "/held")
            checks = page.locator("label.check")
            expect(checks).to_have_count(2)
            _fits(page, "held")
            held = [int(x) for x in checks.evaluate_all("els => els.map(e => e.dataset.id)")]
            for spool_id in held:
                page.locator(f'label.check[data-id="{spool_id}"]').tap()
            page.screenshot(path=str(shots / "phone-held.png"))
            page.locator("button.assign", has_text="Ødegård").tap()
            expect(page.locator(".notice")).to_contain_text("2 capture(s) assigned")
            assert [rig.row(i)["session_id"] for i in held] == [second, second]
            served.run(rig.wrap_all())

            # Wrong patient: move one of them (wrapped, unsent) to the scope's patient.
            page.goto(f"{base}/sessions/{second}/move")
            _fits(page, "move")
            page.locator(f'label.check[data-id="{held[1]}"]').tap()  # keep only the first
            page.get_by_role("button", name="Move…").tap()
            expect(page.locator(".confirm")).to_contain_text("Please confirm")
            _fits(page, "move: confirm")
            page.locator("#confirm").tap()
            expect(page).to_have_url(f"{base}/sessions/{first}")
            assert rig.row(held[0])["session_id"] == first
            served.run(rig.wrap_all())

            # It now belongs to a flagged session: marked, and a reveal asks why.
            page.goto(f"{base}/spool")
            expect(page.locator(f'tr[data-id="{held[0]}"] .sensitive')).to_be_visible()
            _fits(page, "spool")
            page.goto(f"{base}/spool/{held[0]}")
            _fits(page, "capture, flagged")
            page.get_by_label("Quality control").check()
            page.locator("#reveal").tap()
            expect(page.locator("#patient td").first).to_have_class("revealed")
            expect(page.locator("#patient")).to_contain_text("PID002")

            # End the scope's patient from the overview.
            page.goto(base + "/")
            page.locator('.device-session[data-device="scope"] button.danger').tap()
            expect(page.locator('.device-session[data-device="scope"]')).to_contain_text(
                "No patient"
            )
        finally:
            browser.close()

    every = server.audit.path.read_text(encoding="ascii").splitlines()
    assert any("action=view-worklist" in line for line in every), "patients shown: audited"
    lines = [line for line in every if "action=view-" not in line]
    assert len(lines) == 2
    assert re.fullmatch(rf"\S+Z user=tech action=move spool_id={held[0]} "
                        rf"from_session={second} to_session={first}", lines[0])  # fmt: skip
    assert lines[1].endswith(f"action=reveal spool_id={held[0]} reason=quality_control")
    for shot in ("phone-start", "phone-body-map", "phone-session", "phone-overview", "phone-held"):
        data = (shots / f"{shot}.png").read_bytes()
        assert data.startswith(b"\x89PNG")
        assert len(data) < 200_000
