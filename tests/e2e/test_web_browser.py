"""The local page in a real browser (Debian's Chromium driven by Playwright) against
a real ``dermgate run``: simulated dermatoscope on a pty, real Orthanc.

Login, the overview (device and delivered count, live), "Why isn't it sending?",
a confirmed retry of a quarantined capture, and a reveal that writes one audit line
without patient data. Takes screenshots of the overview and the checks; with
``DERMGATE_UPDATE_SCREENSHOTS=1`` they replace the ones committed in
docs/screenshots/ (otherwise a test run leaves the working tree alone).
Chromium missing makes this test fail, never skip.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

from gateway.demo.local_orthanc import OrthancProcess, free_port
from gateway.spool.details import read_patient
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.paths import REPO_ROOT
from tests.support.simulator import SimulatorProcess
from tests.support.state import ledger_rows, states
from tests.support.waiting import wait_for
from tests.support.web import PASSWORD

DOC_SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
AUDIT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ user=tech action=reveal spool_id=\d+$")


def _add_user(config: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "user", "add", "tech", "--config", str(config),
         "--password-stdin"],
        input=PASSWORD + "\n", capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def _login(page: Page, base: str) -> None:
    page.goto(base + "/spool")
    expect(page).to_have_url(base + "/login")
    page.fill('input[name="user"]', "tech")
    page.fill('input[name="password"]', PASSWORD)
    page.click('button[type="submit"]')
    expect(page).to_have_url(base + "/")


def test_technician_page_in_chromium(
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
    # Capture 1 is not a JPEG (quarantined at wrapping); 2 and 3 are delivered.
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
    before = quarantined["updated_at"]

    update = os.environ.get("DERMGATE_UPDATE_SCREENSHOTS") == "1"
    shots = DOC_SCREENSHOTS if update else tmp_path / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 760})
            _login(page, base)

            # Overview: the device, the delivered count, the quarantined one, live (SSE).
            expect(page.locator("#delivered")).to_have_text("2")
            expect(page.locator("#overview")).to_contain_text("scope")
            expect(page.locator("#overview")).to_contain_text("serial-dermatoscope")
            expect(page.locator("#overview")).to_contain_text("1 capture(s) set aside")
            expect(page.locator(".verdict")).to_have_attribute("data-verdict", "amber")
            page.wait_for_timeout(2500)  # one live update from /events
            expect(page.locator("#delivered")).to_have_text("2")
            page.screenshot(path=str(shots / "overview.png"))

            # Why isn't it sending? The checks run against the real Orthanc.
            page.click("text=Why isn't it sending?")
            expect(page.locator("#why")).to_contain_text("Answers a DICOM echo")
            expect(page.locator("#why")).to_contain_text("Answers an association and a DICOM echo")
            expect(page.locator("#why")).to_contain_text("Clock")
            expect(page.locator("#why")).to_contain_text("1 capture(s) set aside")
            page.screenshot(path=str(shots / "why-not-sending.png"))

            # Spool view, retry with a confirmation step.
            page.click("nav >> text=Spool")
            row = page.locator(f'tr[data-id="{quarantined["id"]}"]')
            expect(row).to_contain_text("QUARANTINED")
            expect(row).to_contain_text("JPEG")
            row.locator("text=retry").click()
            expect(page.locator(".confirm")).to_contain_text("Please confirm")
            assert quarantined["updated_at"] == before  # nothing changed before confirming
            page.click("#confirm")
            expect(page.locator(".notice")).to_contain_text(
                f"Retry requested: capture {quarantined['id']} is now CAPTURED"
            )

            # The running service wraps it again at once (poked by the page, no restart):
            # still not a JPEG, it is set aside again, with a new time stamp.
            def handled_again() -> bool:
                row = next(r for r in ledger_rows(state_dir) if r["id"] == quarantined["id"])
                return row["state"] == "QUARANTINED" and row["updated_at"] != before

            wait_for(handled_again, 30, "the retried capture to be wrapped again")

            # Reveal: masked by default; revealing writes one audit line first.
            audit = state_dir / "web" / "audit.log"
            assert not audit.exists()
            page.goto(f"{base}/spool/{delivered['id']}")
            masked = page.locator("#patient td")
            expect(masked.first).to_have_class("masked")
            page.click("#reveal")
            expect(page.locator("#patient td").first).to_have_class("revealed")
            expect(page.locator(".notice")).to_contain_text("recorded in the audit log")

            # A browser left on the live overview does not hold up a service stop.
            page.goto(base + "/")
            expect(page.locator("#delivered")).to_have_text("2")
            started = time.monotonic()
            assert gateway.stop(timeout=30) == 0
            assert time.monotonic() - started < 15, "the open event stream delayed the stop"
        finally:
            browser.close()

    lines = audit.read_text(encoding="ascii").splitlines()
    assert len(lines) == 1
    assert AUDIT_LINE.match(lines[0]), lines[0]
    assert lines[0].endswith(f"spool_id={delivered['id']}")
    dicom = state_dir / "spool" / "dicom" / delivered["dicom_name"]
    patient = read_patient(dicom)
    for value in patient.values():
        if value:
            assert value not in lines[0]
    for shot in ("overview.png", "why-not-sending.png"):
        data = (shots / shot).read_bytes()
        assert data.startswith(b"\x89PNG")
        assert len(data) < 400_000
