"""The page shows why a capture was refused for a SOP class its PACS does not take."""

from __future__ import annotations

import asyncio
import html
from pathlib import Path

from gateway.core.errors import DeliveryError, DeliveryErrorCode
from gateway.forward.cstore import not_accepted_reason
from gateway.spool import ledger as db
from gateway.spool.deliveries import record_refused, record_substitute
from gateway.status.web.server import WebServer
from tests.support.web import add_user, login, seed_spool, served, web_config

CONFOCAL = "1.2.840.10008.5.1.4.1.1.77.1.8"
BYTE_SC = "1.2.840.10008.5.1.4.1.1.7.2"


def test_the_spool_view_and_the_capture_page_give_the_class_and_its_uid(
    tmp_path: Path,
) -> None:
    config = web_config(tmp_path)
    add_user(config)
    waiting, _ = seed_spool(config)
    reason = not_accepted_reason(CONFOCAL)
    conn = db.open_ledger(config.ledger_path())
    record_refused(conn, waiting, "pacs", DeliveryError(DeliveryErrorCode.NOT_ACCEPTED, reason))
    conn.close()

    async def scenario() -> None:
        async with served(WebServer(config)) as (base, session):
            await login(session, base)
            async with session.get(f"{base}/spool") as r:
                listing = html.unescape(await r.text())
            async with session.get(f"{base}/spool/{waiting}") as r:
                page = html.unescape(await r.text())
        for shown in (listing, page):
            assert f"pacs refused it: {reason}" in shown
            assert "Confocal Microscopy Image Storage" in shown
            assert CONFOCAL in shown

    asyncio.run(scenario())


def test_the_capture_page_says_a_destination_got_a_derived_object(tmp_path: Path) -> None:
    config = web_config(tmp_path)
    add_user(config)
    waiting, _ = seed_spool(config)
    derived = "2.25.4242"
    conn = db.open_ledger(config.ledger_path())
    record_substitute(conn, waiting, "pacs", BYTE_SC, derived, 0.0)
    db.record_sent(conn, waiting, "pacs", now=1.0)
    conn.close()

    async def scenario() -> str:
        async with served(WebServer(config)) as (base, session):
            await login(session, base)
            async with session.get(f"{base}/spool/{waiting}") as r:
                return html.unescape(await r.text())

    page = asyncio.run(scenario())
    assert (
        f"SENT (1 attempts), as Multi-frame Grayscale Byte Secondary Capture Image Storage "
        f"(derived, {derived})" in page
    )
