"""What the fleet is told about captures set aside, and the page's "Box health" card.

``spool.quarantined`` counts captures QUARANTINED now and not yet dealt with: a
capture a technician resolved stays QUARANTINED in the ledger (``counts``) but no
longer needs anybody, so the Home Assistant sensor must drop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.spool import ledger as db
from gateway.spool.admin import resolve_capture
from gateway.spool.figures import spool_figures
from gateway.status.pi_health import read_health
from gateway.status.web.fleet import document_verdict
from gateway.status.web.server import WebServer
from tests.support.pi_sysfs import pi_tree
from tests.support.web import add_user, login, seed_spool, served, web_config


def test_a_resolved_capture_leaves_the_quarantined_figure(tmp_path: Path) -> None:
    config = web_config(tmp_path)
    _, quarantined = seed_spool(config)
    conn = db.open_ledger(config.ledger_path())
    try:
        before = spool_figures(conn)
        assert before.counts["QUARANTINED"] == 1
        assert before.quarantined_open == 1
        resolve_capture(conn, quarantined, "not-needed", "tech")
        after = spool_figures(conn)
    finally:
        conn.close()
    assert after.counts["QUARANTINED"] == 1, "kept, on disk and in the ledger"
    assert after.quarantined_open == 0


async def test_the_overview_shows_the_box_health_card(tmp_path: Path) -> None:
    config = web_config(tmp_path)
    add_user(config)
    health = read_health(pi_tree(tmp_path / "sys-root", throttled="0x50005", lcrit="1"))

    async def snapshot() -> dict[str, Any]:
        return {"devices": [], "destinations": [], "alarms": [], "health": health}

    async with served(WebServer(config, snapshot)) as (base, session):
        await login(session, base)
        async with session.get(base + "/") as r:
            page = await r.text()
    assert "Box health" in page
    assert "Raspberry Pi 4 Model B" in page
    assert "48.3 °C" in page
    assert "under-voltage now: replace the power supply" in page
    assert "throttled now" in page


async def test_an_unreadable_ledger_is_a_red_verdict_not_a_crash(tmp_path: Path) -> None:
    config = web_config(tmp_path)
    seed_spool(config)
    config.ledger_path().write_bytes(b"this is not a database" * 100)
    judge = document_verdict(config)
    said = await judge({"destinations": [], "devices": [], "alarms": []})
    assert said["colour"] == "red"
    assert "cannot be read" in said["headline"]


async def test_the_verdict_of_a_state_document(tmp_path: Path) -> None:
    config = web_config(tmp_path)
    seed_spool(config)  # one capture set aside: amber
    judge = document_verdict(config)
    said = await judge({"destinations": [], "devices": [], "alarms": []})
    assert said["colour"] == "amber"
    assert "1 capture(s) set aside: see the spool." in said["reasons"]
    low = {"code": "under_voltage", "subject": "", "message": "under-voltage: replace it"}
    said = await judge({"destinations": [], "devices": [], "alarms": [low]})
    assert "Under-voltage: replace it." in said["reasons"]
