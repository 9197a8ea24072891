"""A destination removed from the configuration, as the status readers show it.

A real ledger holding a capture that still waits for "research", a destination the
configuration no longer has: the state document (MQTT), the page's overview and
verdict and the "why" page's check say so; nothing counts it as delivered.
"""

from __future__ import annotations

import asyncio
import html
import re
from pathlib import Path

from gateway.core.capture import CaptureOffer, InstanceUIDs
from gateway.core.events import EventBus
from gateway.core.uids import new_uid
from gateway.devices.status import StatusBoard
from gateway.spool import ledger as db
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import Ledger
from gateway.spool.space import SpaceGuard
from gateway.status.snapshot import GatewayState
from gateway.status.web.data import read_figures, verdict
from gateway.status.web.pages import overview_fragment
from gateway.status.web.server import WebServer
from tests.support.dicom_files import DEVICE
from tests.support.web import add_user, login, seed_spool, served, web_config


def _waiting_for_research(path: Path) -> int:
    """One capture sent to both "pacs" and "research"; only the PACS has it yet."""
    conn = db.open_ledger(path)
    uids = InstanceUIDs(new_uid(), new_uid(), new_uid())
    spool_id = db.insert_capture(
        conn,
        driver="serial-dermatoscope",
        device=DEVICE,
        offer=CaptureOffer("c1"),
        uids=uids,
        raw_name="",
        raw_size=0,
        raw_sha256="",
        wrapped=db.WrappedAtIntake(
            dicom_name=f"{uids.sop_instance}.dcm",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.77.1.7",
            transfer_syntax_uid="1.2.840.10008.1.2.4.50",
            destinations=("pacs", "research"),
        ),
        spool_id=1,
    )
    db.record_sent(conn, spool_id, "pacs", now=1.0)
    conn.close()
    return spool_id


def test_the_state_document_lists_a_removed_destination_with_its_waiting_captures(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.sqlite3"
    _waiting_for_research(path)
    dirs = SpoolDirs(tmp_path / "spool")
    dirs.create()

    async def document() -> dict[str, object]:
        bus = EventBus()
        bus.bind(asyncio.get_running_loop())
        ledger = Ledger(path)
        ledger.start()
        try:
            state = GatewayState(
                gateway_id="box",
                software="0",
                ledger=ledger,
                space=SpaceGuard(dirs.root, 0, ledger, bus),
                board=StatusBoard(None, bus),
                forwarders=[],
                bus=bus,
                configured=["pacs"],
            )
            return await state.snapshot()
        finally:
            ledger.close()

    doc = asyncio.run(document())
    assert doc["destinations"] == [
        {
            "name": "research",
            "reachable": None,
            "circuit_open": False,
            "pending": 1,
            "awaiting_commitment": 0,
            "stuck": 0,
            "last_error": None,
            "removed": True,
        }
    ]
    assert doc["spool"]["counts"]["WRAPPED"] == 1  # type: ignore[index]


def test_the_page_and_its_verdict_name_the_removed_destination(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    _waiting_for_research(path)
    fig = read_figures(path, tmp_path, 0, [("pacs", "127.0.0.1", 104, False)])
    removed = [d for d in fig.destinations if d.removed]
    assert [(d.name, d.pending, d.sent) for d in removed] == [("research", 1, 0)]
    assert not removed[0].failing
    judged = verdict(fig)
    assert judged.colour == "amber"
    assert any(
        "1 capture(s) wait for research" in r and "destination removed" in r for r in judged.reasons
    )
    html = overview_fragment(fig, judged)
    assert "destination removed" in html
    with_it = read_figures(
        path, tmp_path, 0, [("pacs", "127.0.0.1", 104, False), ("research", "h", 105, False)]
    )
    assert not any(d.removed for d in with_it.destinations)


def test_the_capture_page_marks_the_delivery_to_a_removed_destination(tmp_path: Path) -> None:
    config = web_config(tmp_path)
    add_user(config)
    waiting, _ = seed_spool(config)
    conn = db.open_ledger(config.ledger_path())
    conn.execute(
        "INSERT INTO deliveries (capture_id, destination, state, next_attempt_at) "
        "VALUES (?, 'research', 'PENDING', 0)",
        (waiting,),
    )
    conn.close()

    async def scenario() -> tuple[str, str, str]:
        async with served(WebServer(config)) as (base, session):
            await login(session, base)
            async with session.get(f"{base}/spool/{waiting}") as r:
                page = html.unescape(await r.text())
            async with session.get(f"{base}/") as r:
                overview = html.unescape(await r.text())
            async with session.get(f"{base}/spool") as r:
                listing = html.unescape(await r.text())
        return page, overview, listing

    page, overview, listing = asyncio.run(scenario())
    row = re.search(rf'<tr data-id="{waiting}">.*?</tr>', listing)
    assert row is not None
    assert "destination removed: research" in row.group(0)
    assert "To research" in page
    assert "PENDING (0 attempts), destination removed" in page
    assert "To pacs" in page
    assert "PENDING (0 attempts)</td>" in page  # pacs: configured, no note
    assert "1 capture(s) wait for research" in overview
