"""The patient pages over real HTTP on the in-process server: start a patient (worklist,
scan, typed), End, lesions, held captures, moving captures, sensitive flags and the
reveal that asks for a reason. The desk is tests.support.desk.MemoryDesk until the
context stage is on main. The phone layout is checked in Chromium
(tests/e2e/test_web_phone.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from pathlib import Path

import aiohttp
import pytest

from gateway.context.desk import HeldView
from gateway.core.context import SessionSource
from gateway.status.web.server import WebServer
from tests.support.desk import MemoryDesk
from tests.support.web import (
    SEEDED_NAME,
    add_user,
    csrf_of,
    login,
    seed_spool,
    served,
    web_config,
)


async def _page(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as r:
        return r.status, await r.text()


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    form_page: str,
    data: dict[str, str] | list[tuple[str, str]],
) -> tuple[int, str, str]:
    """POST with the CSRF token of the page the form was on; (status, text, final URL)."""
    fields = list(data.items()) if isinstance(data, dict) else list(data)
    fields.append(("csrf", csrf_of(form_page)))
    async with session.post(url, data=fields) as r:
        return r.status, await r.text(), str(r.url)


def _server(tmp_path: Path, desk: MemoryDesk | None) -> WebServer:
    config = web_config(tmp_path)
    add_user(config)
    return WebServer(config, desk=desk)


def test_a_visitor_without_login_sees_no_patient_and_opens_nothing(tmp_path: Path) -> None:
    desk = MemoryDesk(["scope"])

    async def scenario() -> None:
        async with served(_server(tmp_path, desk)) as (base, session):
            for path in ("/", "/devices/scope/start", "/held", "/sessions/1"):
                status, text = await _page(session, base + path)
                assert status == 200
                assert "Log in" in text
                assert "Müller" not in text
                assert "PID001" not in text
            async with session.post(
                f"{base}/devices/scope/start", data={"mode": "unidentified"}
            ) as r:
                assert r.status == 401
            assert await desk.sessions() == []

    asyncio.run(scenario())


def test_start_from_worklist_tells_look_alikes_apart_and_end(tmp_path: Path) -> None:
    desk = MemoryDesk(["scope", "scanner"])

    async def scenario() -> None:
        async with served(_server(tmp_path, desk)) as (base, session):
            await login(session, base)
            _, overview = await _page(session, base + "/")
            assert overview.count("Start a patient") == 2
            status, start = await _page(session, f"{base}/devices/scope/start?q=m%C3%BCller")
            assert status == 200
            # Both Anna Müllers, with what tells them apart.
            assert start.count("Müller, Anna") == 2
            for fact in ("PID001", "PID002", "born 1980-01-01", "born 1980-01-10", "Mole check",
                         "Dermoscopy follow-up", "female"):  # fmt: skip
                assert fact in start
            assert "Ødegård" not in start
            status, text, url = await _post(
                session, f"{base}/devices/scope/start", start, {"mode": "pick", "item": "2"}
            )
            assert status == 200
            assert url.endswith("/sessions/1")
            assert "PID002" in text
            assert "Dermoscopy follow-up" in text
            # Starting another patient on the device says who is open now.
            _, again = await _page(session, f"{base}/devices/scope/start")
            current = re.search(r'<div class="notice" id="current">.*?</div></div>', again)
            assert current
            assert "PID002" in current.group(0)
            view = await desk.session(1)
            assert view.source is SessionSource.WORKLIST
            assert view.patient.patient_id == "PID002"
            assert view.opened_by == "user:tech"
            assert view.operator_name == "tech"

            _, overview = await _page(session, base + "/")
            card = re.search(r'data-device="scope">.*?</div></div>', overview, re.S)
            assert card
            assert "Müller, Anna" in card.group(0)
            assert ">End<" in card.group(0)
            assert overview.count("Start a patient") == 1  # the scanner has none
            status, overview, url = await _post(session, f"{base}/sessions/1/end", overview, {})
            assert url == base + "/"
            assert overview.count("Start a patient") == 2
            assert (await desk.session(1)).closed_at is not None
            _, ended = await _page(session, f"{base}/sessions/1")
            assert "Ended " in ended
            assert 'id="end"' not in ended
            assert 'id="add-lesion"' not in ended
            # Ending it again is a plain message, not a 500.
            status, text, _ = await _post(session, f"{base}/sessions/1/end", overview, {})
            assert status == 409
            assert "already ended" in text

    asyncio.run(scenario())


def test_scan_typed_unidentified_and_refusals(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    desk = MemoryDesk(["scope"], stale=True)

    async def scenario() -> None:
        async with served(_server(tmp_path, desk)) as (base, session):
            await login(session, base)
            _, start = await _page(session, f"{base}/devices/scope/start")
            assert "The worklist is stale: last updated 2 h 0 min ago" in start
            _, overview = await _page(session, f"{base}/")
            assert "The worklist is stale: last updated 2 h 0 min ago" in overview
            url = f"{base}/devices/scope/start"
            await _post(session, url, start, {"mode": "scan", "code": "ACC1003"})
            assert (await desk.sessions())[0].patient.patient_id == "PID003"
            await _post(session, url, start, {"mode": "scan", "code": "77001234"})
            view = (await desk.sessions())[0]
            assert view.source is SessionSource.BARCODE
            assert view.patient.patient_id == "77001234"
            typed = {"mode": "typed", "patient_id": "X-9", "family": "Smith", "given": "Eve",
                     "birth_date": "1990-02-03", "sex": "F"}  # fmt: skip
            await _post(session, url, start, typed)
            view = (await desk.sessions())[0]
            assert view.patient.patient_name == "Smith^Eve"
            assert view.patient.birth_date == "19900203"
            assert view.source is SessionSource.MANUAL
            await _post(session, url, start, {"mode": "unidentified"})
            assert (await desk.sessions())[0].source is SessionSource.UNIDENTIFIED
            assert len(await desk.sessions()) == 1  # one open session per device
            # Refusals are plain messages on the start page, never a 500.
            status, text, _ = await _post(session, url, start, {"mode": "typed", "patient_id": ""})
            assert status == 409
            assert "A Patient ID is required." in text
            status, text, _ = await _post(session, url, start, {"mode": "pick", "item": "nope"})
            assert status == 409
            assert "That worklist item is gone." in text
            bad_date = {**typed, "birth_date": "02/03/1990"}
            status, text, _ = await _post(session, url, start, bad_date)
            assert status == 409
            assert "not a date" in text
            # Without the page's CSRF token nothing happens.
            async with session.post(url, data={"mode": "unidentified", "csrf": "x"}) as r:
                assert r.status == 403
            status, _ = await _page(session, f"{base}/devices/nosuch/start")
            assert status == 404
            # Refresh the worklist on demand: back to the start page, no longer stale.
            status, start, url = await _post(
                session, f"{base}/worklist/refresh", start, {"back": "/devices/scope/start"}
            )
            assert url == f"{base}/devices/scope/start"
            assert desk.refreshes == 1
            assert "3 scheduled, updated 1 min ago." in start

    asyncio.run(scenario())
    # The log names users, devices and session ids, never the patients.
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "opened session" in logged
    for patient_data in ("PID003", "77001234", "X-9", "Smith", "Eve", "19900203", "ACC1003"):
        assert patient_data not in logged


def test_a_scanned_accession_number_opens_its_order_even_without_a_worklist_client(
    tmp_path: Path,
) -> None:
    desk = MemoryDesk(["scope"], client=False)

    async def scenario() -> None:
        async with served(_server(tmp_path, desk)) as (base, session):
            await login(session, base)
            _, start = await _page(session, f"{base}/devices/scope/start")
            assert "No worklist server is configured" in start
            await _post(
                session, f"{base}/devices/scope/start", start, {"mode": "scan", "code": "ACC1002"}
            )
            view = (await desk.sessions())[0]
            assert view.source is SessionSource.WORKLIST
            assert view.patient.patient_id == "PID002"  # not "ACC1002" as a Patient ID

    asyncio.run(scenario())


def test_lesion_from_body_map_and_from_the_registry(tmp_path: Path) -> None:
    desk = MemoryDesk(["scope"])

    async def scenario() -> None:
        async with served(_server(tmp_path, desk)) as (base, session):
            await login(session, base)
            _, start = await _page(session, f"{base}/devices/scope/start")
            await _post(
                session, f"{base}/devices/scope/start", start, {"mode": "pick", "item": "1"}
            )
            _, page = await _page(session, f"{base}/sessions/1/lesion")
            assert page.count('class="bm-region"') >= 40
            assert "<svg" in page
            region = re.search(
                r'<a class="bm-region" href="([^"]+)" [^>]*data-key="back-upper-back-L"', page
            )
            assert region, "the left upper back is a region of the body map"
            _, confirm = await _page(session, base + region.group(1).replace("&amp;", "&"))
            assert "New lesion: Skin of back of upper thoracic region" in confirm
            assert '<option value="L" selected>' in confirm
            status, text, url = await _post(
                session, f"{base}/sessions/1/lesion", confirm,
                {"site": "SCT:699893008", "laterality": "L", "description": "left of spine"},
            )  # fmt: skip
            assert url.endswith("/sessions/1")
            assert "Now: <b>L01</b>" in text
            # The site list finds sites by name.
            _, found = await _page(session, f"{base}/sessions/1/lesion?find=scalp")
            assert "Skin of scalp" in found
            assert "Skin of back" not in found.split("Or find")[1]
            await _post(session, f"{base}/sessions/1/lesion", text, {"site": "SCT:43067004"})
            assert (await desk.session(1)).lesion.tracking_id == "L02"  # type: ignore[union-attr]
            # Back to L01 from the patient's list.
            status, text, _ = await _post(
                session, f"{base}/sessions/1/lesion", text, {"tracking_id": "L01"}
            )
            assert "Now: <b>L01</b>" in text
            status, text, _ = await _post(
                session, f"{base}/sessions/1/lesion", text, {"site": "SCT:0"}
            )
            assert status == 409
            assert "Unknown anatomic site." in text

    asyncio.run(scenario())


def test_session_page_without_a_lesion_registry_still_shows_the_patient(tmp_path: Path) -> None:
    desk = MemoryDesk(["scope"], lesions=False)

    async def scenario() -> None:
        async with served(_server(tmp_path, desk)) as (base, session):
            await login(session, base)
            _, start = await _page(session, f"{base}/devices/scope/start")
            status, text, _ = await _post(
                session, f"{base}/devices/scope/start", start, {"mode": "pick", "item": "3"}
            )
            assert status == 200
            assert "PID003" in text
            assert "lesions are not available yet" in text
            assert 'id="end"' in text

    asyncio.run(scenario())


def test_held_captures_assigned_in_one_action(tmp_path: Path) -> None:
    desk = MemoryDesk(["scope", "scanner"])
    for sid in (11, 12, 13):
        desk.held_views[sid] = HeldView(
            sid, "scanner", f"2026-12-06 09:{sid}", "no patient session on scanner", "10:00"
        )

    async def scenario() -> None:
        async with served(_server(tmp_path, desk)) as (base, session):
            await login(session, base)
            _, overview = await _page(session, base + "/")
            assert "3 capture(s) held" in overview
            _, start = await _page(session, f"{base}/devices/scope/start")
            await _post(
                session, f"{base}/devices/scope/start", start, {"mode": "pick", "item": "3"}
            )
            _, held = await _page(session, base + "/held")
            assert "no patient session on scanner" in held
            assert "temporary patient ID from 10:00" in held
            assert "Ødegård" in held
            status, held, _ = await _post(
                session, f"{base}/held/assign", held, [("spool", "11"), ("spool", "12"), ("session", "1")]
            )  # fmt: skip
            assert "2 capture(s) assigned" in held
            assert desk.assigned == {11: 1, 12: 1}
            # Or start a patient for them, right there.
            status, start, _ = await _post(session, f"{base}/held/start", held, [("spool", "13")])
            assert "for 1 held capture(s)" in start
            assert 'value="scanner"' in start
            status, held, _ = await _post(
                session, f"{base}/held/assign", start,
                [("spool", "13"), ("device", "scanner"), ("mode", "typed"), ("patient_id", "P-55")],
            )  # fmt: skip
            assert "1 capture(s) assigned" in held
            assert "None waiting." in held
            new = (await desk.sessions())[0]
            assert new.device == "scanner"
            assert desk.assigned[13] == new.id
            status, text, _ = await _post(session, f"{base}/held/assign", held, {"session": "1"})
            assert status == 400
            assert "Choose at least one capture" in text

    asyncio.run(scenario())


def test_move_unsent_captures_is_confirmed_and_audited(tmp_path: Path) -> None:
    desk = MemoryDesk(["scope", "scanner"])
    server = _server(tmp_path, desk)
    wrapped, quarantined = seed_spool(server.config)

    async def scenario() -> None:
        async with served(server) as (base, session):
            await login(session, base)
            _, start = await _page(session, f"{base}/devices/scope/start")
            await _post(
                session, f"{base}/devices/scope/start", start, {"mode": "pick", "item": "1"}
            )
            await _post(
                session, f"{base}/devices/scanner/start", start, {"mode": "pick", "item": "2"}
            )
            with sqlite3.connect(server.config.ledger_path()) as conn:  # bound at intake
                conn.execute("UPDATE captures SET session_id = 1")
            _, move = await _page(session, f"{base}/sessions/1/move")
            # Unsent captures only (a quarantined one was handled otherwise).
            assert f'name="spool" value="{wrapped}"' in move
            assert f'name="spool" value="{quarantined}"' not in move
            status, confirm, _ = await _post(
                session, f"{base}/sessions/1/move", move, [("spool", str(wrapped)), ("to", "2")]
            )
            assert "Please confirm" in confirm
            assert "PID002" in confirm
            assert desk.assigned == {}
            assert not server.audit.path.exists()
            status, text, url = await _post(
                session, f"{base}/sessions/1/move", confirm,
                [("spool", str(wrapped)), ("to", "2"), ("confirm", "yes")],
            )  # fmt: skip
            assert url.endswith("/sessions/2")
            assert desk.assigned == {wrapped: 2}
            line = server.audit.path.read_text(encoding="ascii")
            assert re.fullmatch(
                rf"\S+Z user=tech action=move spool_id={wrapped} from_session=1 to_session=2\n",
                line,
            )
            status, text, _ = await _post(
                session, f"{base}/sessions/1/move", move, [("spool", str(quarantined)), ("to", "2")]
            )
            assert status == 409
            assert "not sent yet" in text

    asyncio.run(scenario())


def test_sensitive_capture_is_marked_and_its_reveal_asks_a_reason(tmp_path: Path) -> None:
    desk = MemoryDesk(["scope"])
    server = _server(tmp_path, desk)
    wrapped, _ = seed_spool(server.config)

    async def scenario() -> None:
        async with served(server) as (base, session):
            await login(session, base)
            _, page = await _page(session, f"{base}/spool/{wrapped}")
            assert 'id="sensitive-mark"' not in page
            _, page, _ = await _post(
                session, f"{base}/spool/{wrapped}/sensitive", page, {"sensitive": "1"}
            )
            assert 'id="sensitive-mark"' in page
            assert 'name="reason"' in page
            _, spool = await _page(session, f"{base}/spool")
            row = re.search(rf'<tr data-id="{wrapped}">.*?</tr>', spool)
            assert row
            assert 'class="sensitive"' in row.group(0)
            # No reason (or free text): refused, nothing audited, nothing shown.
            for data in ({}, {"reason": "Doe^Janet asked"}):
                status, text, _ = await _post(session, f"{base}/spool/{wrapped}/reveal", page, data)
                assert status == 400
                assert SEEDED_NAME not in text
            assert not server.audit.path.exists()
            status, text, _ = await _post(
                session, f"{base}/spool/{wrapped}/reveal", page, {"reason": "second_opinion"}
            )
            assert status == 200
            assert SEEDED_NAME in text
            line = server.audit.path.read_text(encoding="ascii")
            assert line.endswith(f"action=reveal spool_id={wrapped} reason=second_opinion\n")
            # A session can be flagged too.
            _, start = await _page(session, f"{base}/devices/scope/start")
            _, text, _ = await _post(
                session, f"{base}/devices/scope/start", start, {"mode": "unidentified"}
            )
            _, text, _ = await _post(
                session, f"{base}/sessions/1/sensitive", text, {"sensitive": "1"}
            )
            assert (await desk.session(1)).sensitive
            assert "Sensitive: on" in text

    asyncio.run(scenario())


def test_without_a_desk_there_are_no_patient_pages(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with served(_server(tmp_path, None)) as (base, session):
            await login(session, base)
            _, overview = await _page(session, base + "/")
            assert 'id="sessions"' not in overview
            for path in ("/held", "/devices/scope/start", "/sessions/1"):
                status, text = await _page(session, base + path)
                assert status == 404
                assert "Patient sessions are not set up on this box" in text

    asyncio.run(scenario())
