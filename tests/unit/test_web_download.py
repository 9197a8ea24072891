"""A capture set aside on the page: what to do next, in plain words, and its DICOM
file as a download (the page over real HTTP, the real ledger and spool).

The raw-file download, the refusals and the browser's view are in
tests/e2e/test_web_a11y.py; here the DICOM file of a capture the PACS refused.
"""

from __future__ import annotations

import asyncio
import html
import re
from pathlib import Path

from gateway.core.errors import DeliveryError, DeliveryErrorCode
from gateway.forward.cstore import not_accepted_reason
from gateway.spool import admin
from gateway.spool import ledger as db
from gateway.spool.deliveries import record_refused
from gateway.spool.rebuild import RAW_ONLY_REASON
from gateway.spool.routing import NO_ROUTE_REASON
from gateway.status.web import next_step as steps
from gateway.status.web.server import WebServer
from tests.support.web import (
    SEEDED_NAME,
    SEEDED_PID,
    add_user,
    csrf_of,
    login,
    seed_spool,
    served,
    web_config,
)

CONFOCAL = "1.2.840.10008.5.1.4.1.1.77.1.8"


def test_a_refused_class_says_ask_the_pacs_admin_or_fall_back_and_downloads_its_dicom_file(
    tmp_path: Path,
) -> None:
    config = web_config(tmp_path)
    add_user(config)
    refused, _ = seed_spool(config)
    conn = db.open_ledger(config.ledger_path())
    reason = not_accepted_reason(CONFOCAL)
    record_refused(conn, refused, "pacs", DeliveryError(DeliveryErrorCode.NOT_ACCEPTED, reason))
    dicom = config.spool_dir() / "dicom" / str(admin.find_entry(conn, refused).dicom_name)
    conn.close()
    server = WebServer(config)

    async def scenario() -> tuple[str, int, dict[str, str], bytes, int]:
        async with served(server) as (base, session):
            await login(session, base)
            async with session.get(f"{base}/spool/{refused}") as r:
                page = html.unescape(await r.text())
            token = csrf_of(page)
            url = f"{base}/spool/{refused}/download"
            async with session.post(url, data={"csrf": token}) as r:
                status, headers, body = r.status, dict(r.headers), await r.read()
            config.audit_path().unlink()
            config.audit_path().mkdir()  # the audit log cannot be written
            async with session.post(url, data={"csrf": token}) as r:
                refused_status = r.status
                assert "attachment" not in r.headers.get("Content-Disposition", "")
        return page, status, headers, body, refused_status

    page, status, headers, body, refused_status = asyncio.run(scenario())
    step = re.search(r'<tr id="next-step"><th>What to do</th><td>(.*?)</td>', page)
    assert step is not None
    assert step.group(1) == steps.BY_CODE[DeliveryErrorCode.NOT_ACCEPTED]
    assert 'fallback = "compatible"' in step.group(1)
    assert 'id="download"' in page
    assert "Download its DICOM file" in page
    assert status == 200
    assert (
        headers["Content-Disposition"] == f'attachment; filename="dermgate-capture-{refused}.dcm"'
    )
    assert headers["Content-Type"] == "application/dicom"
    assert headers["Cache-Control"] == "no-store"
    assert body == dicom.read_bytes()
    assert refused_status == 500
    assert list(config.audit_path().iterdir()) == []


def test_a_download_writes_one_audit_line_without_patient_data(tmp_path: Path) -> None:
    config = web_config(tmp_path)
    add_user(config)
    waiting, set_aside = seed_spool(config)  # WRAPPED, QUARANTINED

    async def scenario() -> tuple[int, int]:
        async with served(WebServer(config)) as (base, session):
            await login(session, base)
            async with session.get(f"{base}/spool/{waiting}") as r:
                token = csrf_of(await r.text())
            async with session.post(f"{base}/spool/{waiting}/download", data={"csrf": token}) as r:
                not_set_aside = r.status
            async with session.post(
                f"{base}/spool/{set_aside}/download", data={"csrf": token}
            ) as r:
                await r.read()
                return not_set_aside, r.status

    assert asyncio.run(scenario()) == (409, 200)
    lines = config.audit_path().read_text(encoding="ascii").splitlines()
    assert len(lines) == 1
    assert re.fullmatch(
        rf"\S+Z user=tech action=download spool_id={set_aside} kind=dicom", lines[0]
    )
    assert SEEDED_NAME not in lines[0]
    assert SEEDED_PID not in lines[0]


def test_each_reason_gets_a_next_step_in_plain_words() -> None:
    no_route = f"{NO_ROUTE_REASON}: no [[routes]] entry matches it (device class x); add a route"
    assert steps.next_step(no_route, []) == steps.NO_ROUTE
    assert steps.next_step(RAW_ONLY_REASON, []) == steps.REBUILT
    assert steps.next_step("raw capture file missing", []) == steps.FILE_MISSING
    assert steps.next_step("capture is not a JPEG (starts with 00ff)", []) == steps.DAMAGED
    driver = "the DICOM writer failed unexpectedly (KeyError); check the device driver, then retry"
    assert steps.next_step(driver, []) == steps.DRIVER
    refused = "pacs refused it: whatever the PACS said"
    assert (
        steps.next_step(refused, [None, "commitment_failed"])
        == (steps.BY_CODE[DeliveryErrorCode.COMMITMENT_FAILED])
    )
    assert steps.next_step(refused, ["unreachable"]) == steps.FALLBACK
    assert steps.next_step("resolved by technician tech: retaken", []) is None
    assert steps.next_step(None, []) is None
    for code in DeliveryErrorCode:  # every refusal for good has its own next step
        if code not in (
            DeliveryErrorCode.UNREACHABLE,
            DeliveryErrorCode.NO_RESPONSE,
            DeliveryErrorCode.ABORTED,
            DeliveryErrorCode.ASSOCIATION_REJECTED,
            DeliveryErrorCode.AUTH_UNAVAILABLE,
            DeliveryErrorCode.OTHER,
        ):
            assert code in steps.BY_CODE, code
