"""The patient pages over real HTTP on the in-process server, on the real context stage
(tests.support.context.ContextRig: ledger, intake, wrapper, ContextStage): start a
patient (worklist, scan, typed, unidentified), End, lesions, held captures, moving
captures, sensitive flags and the reveal that asks for a reason; refusals are plain
pages. The phone layout is checked in Chromium (tests/e2e/test_web_phone.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.core.capture import CaptureOffer, Laterality
from gateway.core.context import SessionSource
from gateway.demo.local_orthanc import free_port
from gateway.status.web.server import WebServer
from tests.support.context import CAMERA, SCOPE, ContextRig, item, jpeg
from tests.support.web import add_user, csrf_of, login, served, web_config

Page = tuple[ContextRig, WebServer, str, aiohttp.ClientSession]

#: Two look-alikes (same name, different birth dates and IDs) and a third patient.
WORKLIST = [
    item(1, patient_id="PID001", name="Müller^Anna", accession="ACC1001",
         study_uid="1.2.826.0.1.3680043.10.9.1", birth_date="19800101", procedure="Mole check"),
    item(2, patient_id="PID002", name="Müller^Anna", accession="ACC1002",
         study_uid="1.2.826.0.1.3680043.10.9.2", birth_date="19800110",
         procedure="Dermoscopy follow-up"),
    item(3, patient_id="PID003", name="Ødegård^Jon", accession="ACC1003",
         study_uid="1.2.826.0.1.3680043.10.9.3", birth_date="19550505", sex="M",
         procedure="Total body photography"),
]  # fmt: skip


@contextlib.asynccontextmanager
async def page_on_stage(tmp_path: Path, extra: str = "", hold: int = 3600) -> AsyncIterator[Page]:
    """The page on a real stage with the worklist above cached; logged in as tech."""
    rig = ContextRig(
        tmp_path, hold=hold, extra=f'{extra}\n[web]\nlisten = "127.0.0.1:{free_port()}"\n'
    )
    try:
        rig.set_worklist(WORKLIST)
        add_user(rig.config)
        server = WebServer(rig.config, desk=rig.stage)
        async with served(server) as (base, session):
            await login(session, base)
            yield rig, server, base, session
    finally:
        rig.close()


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as r:
        return r.status, await r.text()


async def _post(
    session: aiohttp.ClientSession, url: str, page: str, data: list[tuple[str, str]]
) -> tuple[int, str, str]:
    """POST with the CSRF token of ``page``; (status, text, final URL)."""
    async with session.post(url, data=[*data, ("csrf", csrf_of(page))]) as r:
        return r.status, await r.text(), str(r.url)


async def _open(page: Page, device: str, fields: list[tuple[str, str]]) -> int:
    """Open a session on ``device`` through the start page; its id."""
    _, _, base, session = page
    _, start = await _get(session, f"{base}/devices/{device}/start")
    status, text, url = await _post(session, f"{base}/devices/{device}/start", start, fields)
    assert status == 200, text
    return int(url.rsplit("/", 1)[1])


def _key(n: int) -> str:
    return WORKLIST[n - 1].key


def test_a_visitor_without_login_sees_no_patient_and_opens_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with page_on_stage(tmp_path) as page:
            rig, _, base, _ = page
            await _open(page, "scope", [("mode", "pick"), ("item", _key(1))])
            async with aiohttp.ClientSession() as stranger:
                for path in ("/", "/devices/scope/start", "/held", "/sessions/1"):
                    status, text = await _get(stranger, base + path)
                    assert status == 200
                    assert "Log in" in text  # the login page, nothing else
                    assert "Müller" not in text
                    assert "PID001" not in text
                async with stranger.post(f"{base}/sessions/1/end", data={}) as r:
                    assert r.status == 401
            assert (await rig.stage.session(1)).closed_at is None

    asyncio.run(scenario())


def test_start_from_worklist_tells_look_alikes_apart_and_end(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with page_on_stage(tmp_path) as page:
            rig, _, base, session = page
            _, overview = await _get(session, base + "/")
            assert overview.count("Start a patient") == 2
            status, start = await _get(session, f"{base}/devices/scope/start?q=m%C3%BCller")
            assert status == 200
            # Both Anna Müllers, with what tells them apart.
            assert start.count("Müller, Anna") == 2
            for fact in ("PID001", "PID002", "born 1980-01-01", "born 1980-01-10", "Mole check",
                         "Dermoscopy follow-up", "female"):  # fmt: skip
                assert fact in start
            assert "Ødegård" not in start
            pick = [("mode", "pick"), ("item", _key(2))]
            status, text, url = await _post(session, f"{base}/devices/scope/start", start, pick)
            assert status == 200
            sid = int(url.rsplit("/", 1)[1])
            assert "PID002" in text
            assert "Dermoscopy follow-up" in text
            view = await rig.stage.session(sid)
            assert view.source is SessionSource.WORKLIST
            assert view.patient.patient_id == "PID002"
            assert view.study_uid == WORKLIST[1].study_uid
            assert view.opened_by == "user:tech"

            # Starting another patient on the device says who is open now.
            _, again = await _get(session, f"{base}/devices/scope/start")
            current = re.search(r'<div class="notice" id="current">.*?</div></div>', again)
            assert current
            assert "PID002" in current.group(0)

            _, overview = await _get(session, base + "/")
            card = re.search(r'data-device="scope">.*?</div></div>', overview, re.S)
            assert card
            assert "Müller, Anna" in card.group(0)
            assert ">End<" in card.group(0)
            assert overview.count("Start a patient") == 1  # the camera has none
            _, overview, url = await _post(session, f"{base}/sessions/{sid}/end", overview, [])
            assert url == base + "/"
            assert overview.count("Start a patient") == 2
            assert (await rig.stage.session(sid)).closed_at is not None
            _, ended = await _get(session, f"{base}/sessions/{sid}")
            assert "Ended " in ended
            assert 'id="end"' not in ended
            assert 'id="add-lesion"' not in ended
            # Ending it again is a plain message, not a 500.
            status, text, _ = await _post(session, f"{base}/sessions/{sid}/end", overview, [])
            assert status == 409
            assert "Not possible" in text

    asyncio.run(scenario())


# pynetdicom 3.0.4 leaves the socket of a refused connection to the garbage collector
# (as in tests/unit/test_worklist.py).
@pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning")
def test_scan_typed_unidentified_refusals_and_a_stale_worklist(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # A worklist server that is gone: the cache is used, shown stale with its age.
    gone = f'[worklist]\nae_title = "RIS"\nhost = "127.0.0.1"\nport = {free_port()}\n'

    async def scenario() -> None:
        async with page_on_stage(tmp_path, gone) as page:
            rig, _, base, session = page
            rig.set_worklist(WORKLIST, age=7200)
            assert rig.worklist is not None
            await rig.worklist.reload()
            _, start = await _get(session, f"{base}/devices/scope/start")
            assert "The worklist is stale: last updated 2 h 0 min ago" in start
            _, overview = await _get(session, f"{base}/")
            assert "The worklist is stale: last updated 2 h 0 min ago" in overview
            # Refresh on demand: it fails (nobody listens), the page says so, no 500.
            status, start, url = await _post(
                session, f"{base}/worklist/refresh", start, [("back", "/devices/scope/start")]
            )
            assert status == 200
            assert url == f"{base}/devices/scope/start"
            assert "The worklist is stale: last updated 2 h 0 min ago (" in start

            sid = await _open(page, "scope", [("mode", "scan"), ("code", "ACC1003")])
            assert (await rig.stage.session(sid)).patient.patient_id == "PID003"
            sid = await _open(page, "scope", [("mode", "scan"), ("code", "77001234")])
            view = await rig.stage.session(sid)
            assert view.source is SessionSource.BARCODE
            assert view.patient.patient_id == "77001234"
            typed = [("mode", "typed"), ("patient_id", "X-9"), ("family", "Smith"),
                     ("given", "Eve"), ("birth_date", "1990-02-03"), ("sex", "F")]  # fmt: skip
            sid = await _open(page, "scope", typed)
            view = await rig.stage.session(sid)
            assert view.patient.patient_name == "Smith^Eve"
            assert view.patient.birth_date == "19900203"
            assert view.patient.issuer_of_patient_id == "HOSP-MRN"  # the box's default
            assert view.source is SessionSource.MANUAL
            sid = await _open(page, "scope", [("mode", "unidentified")])
            assert (await rig.stage.session(sid)).source is SessionSource.UNIDENTIFIED
            assert len(await rig.stage.sessions()) == 1  # one open session per device

            # Refusals are plain messages on the start page, never a 500.
            url = f"{base}/devices/scope/start"
            _, start = await _get(session, url)
            refused = [
                ([("mode", "typed"), ("patient_id", "")], "A Patient ID is required."),
                ([("mode", "pick"), ("item", "nope")], ""),
                ([*typed[:4], ("birth_date", "02/03/1990")], "not a date"),
                ([("mode", "scan"), ("code", "")], "Nothing was scanned."),
            ]
            for fields, words in refused:
                status, text, _ = await _post(session, url, start, fields)
                assert status == 409
                assert words in text
                assert 'class="error"' in text
            # Without the page's CSRF token nothing happens.
            async with session.post(url, data={"mode": "unidentified", "csrf": "x"}) as r:
                assert r.status == 403
            assert len(await rig.stage.sessions(open_only=False)) == 4
            status, _ = await _get(session, f"{base}/devices/nosuch/start")
            assert status == 404

    asyncio.run(scenario())
    # The log names users, devices and session ids, never the patients.
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "opened session" in logged
    for patient_data in ("PID003", "77001234", "X-9", "Smith", "Eve", "19900203", "ACC1003"):
        assert patient_data not in logged


def test_a_scanned_accession_number_opens_its_order_even_without_a_worklist_client(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with page_on_stage(tmp_path) as page:
            rig, _, base, session = page
            _, start = await _get(session, f"{base}/devices/scope/start")
            assert "No worklist server is configured" in start
            assert "PID002" in start  # the cached items can still be picked
            sid = await _open(page, "scope", [("mode", "scan"), ("code", "ACC1002")])
            view = await rig.stage.session(sid)
            assert view.source is SessionSource.WORKLIST
            assert view.patient.patient_id == "PID002"  # not "ACC1002" as a Patient ID

    asyncio.run(scenario())


def test_lesion_from_body_map_and_from_the_registry(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with page_on_stage(tmp_path) as page:
            rig, _, base, session = page
            sid = await _open(page, "scope", [("mode", "pick"), ("item", _key(1))])
            _, body_map = await _get(session, f"{base}/sessions/{sid}/lesion")
            assert body_map.count('class="bm-region"') >= 40
            region = re.search(
                r'<a class="bm-region" href="([^"]+)" [^>]*data-key="back-upper-back-L"', body_map
            )
            assert region, "the left upper back is a region of the body map"
            _, confirm = await _get(session, base + region.group(1).replace("&amp;", "&"))
            assert "New lesion: Skin of back of upper thoracic region" in confirm
            assert '<option value="L" selected>' in confirm
            new = [("site", "SCT:699893008"), ("laterality", "L"), ("description", "mole")]
            _, text, url = await _post(session, f"{base}/sessions/{sid}/lesion", confirm, new)
            assert url.endswith(f"/sessions/{sid}")
            assert "Now: <b>L01</b>" in text
            lesion = (await rig.stage.session(sid)).lesion
            assert lesion is not None
            assert lesion.site == "699893008"
            assert lesion.laterality is Laterality.LEFT
            # The site list finds sites by name.
            _, found = await _get(session, f"{base}/sessions/{sid}/lesion?find=scalp")
            listed = found.split("Or find")[1]
            assert "Skin of scalp" in listed
            assert "upper thoracic" not in listed
            _, text, _ = await _post(
                session, f"{base}/sessions/{sid}/lesion", text, [("site", "SCT:43067004")]
            )
            assert "Now: <b>L02</b>" in text
            # Back to L01 from the patient's list.
            _, text, _ = await _post(
                session, f"{base}/sessions/{sid}/lesion", text, [("tracking_id", "L01")]
            )
            assert "Now: <b>L01</b>" in text
            status, text, _ = await _post(
                session, f"{base}/sessions/{sid}/lesion", text, [("site", "SCT:0")]
            )
            assert status == 409
            assert "Not possible" in text

    asyncio.run(scenario())


def test_held_captures_assigned_in_one_action(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with page_on_stage(tmp_path) as page:
            rig, _, base, session = page
            held = []
            for n in (1, 2, 3):  # nobody is open on the camera: held
                offer = CaptureOffer(device_capture_id=f"c{n}")
                held.append((await rig.capture("camera", CAMERA, offer, jpeg(n))).spool_id)
            _, overview = await _get(session, base + "/")
            assert "3 capture(s) held" in overview
            sid = await _open(page, "scope", [("mode", "pick"), ("item", _key(3))])
            _, page_text = await _get(session, base + "/held")
            listed = page_text.split("<form")[2].split('class="bottom"')[0]
            assert all(f'name="spool" value="{i}"' in listed for i in held)
            assert "Ødegård" not in listed  # the list: no patient data
            assert "Ødegård" in page_text  # the open patient to assign them to
            fields = [("spool", str(held[0])), ("spool", str(held[1])), ("session", str(sid))]
            _, page_text, _ = await _post(session, f"{base}/held/assign", page_text, fields)
            assert "2 capture(s) assigned" in page_text
            assert [rig.row(i)["session_id"] for i in held[:2]] == [sid, sid]
            # Or start a patient for them, right there.
            _, start, _ = await _post(
                session, f"{base}/held/start", page_text, [("spool", str(held[2]))]
            )
            assert "for 1 held capture(s)" in start
            assert 'name="device" value="camera"' in start
            fields = [("spool", str(held[2])), ("device", "camera"), ("mode", "typed"),
                      ("patient_id", "P-55")]  # fmt: skip
            _, page_text, _ = await _post(session, f"{base}/held/assign", start, fields)
            assert "1 capture(s) assigned" in page_text
            assert "None waiting." in page_text
            new = (await rig.stage.sessions())[0]
            assert new.device == "camera"
            assert new.patient.patient_id == "P-55"
            assert rig.row(held[2])["session_id"] == new.id
            # Written with the patient chosen on the page, same SOP Instance UIDs.
            await rig.wrap_all()
            chosen = [rig.dicom(i) for i in held]
            assert [ds.PatientID for ds in chosen] == ["PID003", "PID003", "P-55"]
            assert str(chosen[0].PatientName) == "Ødegård^Jon"
            assert chosen[0].StudyInstanceUID == WORKLIST[2].study_uid
            assert [ds.SOPInstanceUID for ds in chosen] == [
                rig.row(i)["sop_instance_uid"] for i in held
            ]
            status, text, _ = await _post(
                session, f"{base}/held/assign", page_text, [("session", str(sid))]
            )
            assert status == 400
            assert "Choose at least one capture" in text

    asyncio.run(scenario())


def test_move_unsent_captures_is_confirmed_and_audited(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with page_on_stage(tmp_path) as page:
            rig, server, base, session = page
            first = await _open(page, "scope", [("mode", "pick"), ("item", _key(1))])
            second = await _open(page, "camera", [("mode", "pick"), ("item", _key(2))])
            offer = CaptureOffer(device_capture_id="m1")
            moved = (await rig.capture("scope", SCOPE, offer, jpeg(7))).spool_id
            await rig.wrap_all()
            _, move = await _get(session, f"{base}/sessions/{first}/move")
            assert f'name="spool" value="{moved}"' in move
            fields = [("spool", str(moved)), ("to", str(second))]
            _, confirm, _ = await _post(session, f"{base}/sessions/{first}/move", move, fields)
            assert "Please confirm" in confirm
            assert "PID002" in confirm
            assert rig.row(moved)["session_id"] == first  # nothing before confirming
            shown = server.audit.path.read_text(encoding="ascii")
            assert "action=move" not in shown, "views are audited; the move is not done yet"
            _, _, url = await _post(
                session, f"{base}/sessions/{first}/move", confirm, [*fields, ("confirm", "yes")]
            )
            assert url.endswith(f"/sessions/{second}")
            assert rig.row(moved)["session_id"] == second
            await rig.wrap_all()
            assert rig.dicom(moved).PatientID == "PID002"
            line = server.audit.path.read_text(encoding="ascii")[len(shown) :]
            line = "".join(x for x in line.splitlines(keepends=True) if "action=move" in x)
            assert re.fullmatch(
                rf"\S+Z user=tech action=move spool_id={moved} from_session={first} "
                rf"to_session={second}\n",
                line,
            )
            # A capture that is not this session's (any more) is refused, plainly.
            status, text, _ = await _post(session, f"{base}/sessions/{first}/move", move, fields)
            assert status == 409
            assert "not sent yet" in text

    asyncio.run(scenario())


def test_sensitive_capture_is_marked_and_its_reveal_asks_a_reason(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with page_on_stage(tmp_path) as page:
            rig, server, base, session = page
            sid = await _open(page, "scope", [("mode", "pick"), ("item", _key(1))])
            offer = CaptureOffer(device_capture_id="s1")
            plain = (await rig.capture("scope", SCOPE, offer, jpeg(3))).spool_id
            await rig.wrap_all()
            _, text = await _get(session, f"{base}/spool/{plain}")
            assert 'id="sensitive-mark"' not in text
            _, text, _ = await _post(
                session, f"{base}/spool/{plain}/sensitive", text, [("sensitive", "1")]
            )
            assert 'id="sensitive-mark"' in text
            assert 'name="reason"' in text
            _, spool = await _get(session, f"{base}/spool")
            row = re.search(rf'<tr data-id="{plain}">.*?</tr>', spool)
            assert row
            assert 'class="sensitive"' in row.group(0)
            # No reason (or free text): refused, nothing audited, nothing shown.
            audit = server.audit.path
            before = audit.read_text(encoding="ascii") if audit.exists() else ""
            for fields in ([], [("reason", "Müller asked")]):
                status, shown, _ = await _post(
                    session, f"{base}/spool/{plain}/reveal", text, fields
                )
                assert status == 400
                assert "PID001" not in shown
            after = audit.read_text(encoding="ascii") if audit.exists() else ""
            assert "action=reveal" not in after[len(before) :]
            status, shown, _ = await _post(
                session, f"{base}/spool/{plain}/reveal", text, [("reason", "second_opinion")]
            )
            assert status == 200
            assert "PID001" in shown
            line = server.audit.path.read_text(encoding="ascii")
            assert line.endswith(f"action=reveal spool_id={plain} reason=second_opinion\n")
            # A flagged session: its following captures are flagged by the stage.
            _, text = await _get(session, f"{base}/sessions/{sid}")
            _, text, _ = await _post(
                session, f"{base}/sessions/{sid}/sensitive", text, [("sensitive", "1")]
            )
            assert (await rig.stage.session(sid)).sensitive
            assert "Sensitive: on" in text
            offer = CaptureOffer(device_capture_id="s2")
            flagged = (await rig.capture("scope", SCOPE, offer, jpeg(4))).spool_id
            _, spool = await _get(session, f"{base}/spool")
            row = re.search(rf'<tr data-id="{flagged}">.*?</tr>', spool)
            assert row
            assert 'class="sensitive"' in row.group(0)

    asyncio.run(scenario())


def test_without_a_desk_there_are_no_patient_pages(tmp_path: Path) -> None:
    config = web_config(tmp_path)
    add_user(config)

    async def scenario() -> None:
        async with served(WebServer(config)) as (base, session):
            await login(session, base)
            _, overview = await _get(session, base + "/")
            assert 'id="sessions"' not in overview
            for path in ("/held", "/devices/scope/start", "/sessions/1"):
                status, text = await _get(session, base + path)
                assert status == 404
                assert "Patient sessions are not set up on this box" in text

    asyncio.run(scenario())


def test_every_page_that_shows_patients_is_audited_and_hides_them_without_the_log(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with page_on_stage(tmp_path) as page:
            _, server, base, session = page
            sid = await _open(page, "scope", [("mode", "pick"), ("item", _key(1))])
            audit = server.audit.path
            before = audit.read_text(encoding="ascii") if audit.exists() else ""
            for path in ("/", "/devices/camera/start?q=anna", f"/sessions/{sid}"):
                status, text = await _get(session, base + path)
                assert status == 200
                assert "Müller" in text, path
            lines = audit.read_text(encoding="ascii")[len(before) :].splitlines()
            actions = [re.search(r"action=(\S+)", line).group(1) for line in lines]  # type: ignore[union-attr]
            assert actions == ["view-sessions", "view-worklist", "view-session"]
            assert all("user=tech" in line for line in lines)
            assert "Müller" not in "".join(lines)
            assert "PID001" not in "".join(lines)

            # No audit log, no patient: the pages say why instead (a folder where the
            # log should be cannot be appended to, even by root).
            audit.unlink()
            audit.mkdir()
            for path in ("/", "/devices/camera/start?q=anna", f"/sessions/{sid}"):
                _, text = await _get(session, base + path)
                assert "Müller" not in text, path
                assert "PID001" not in text, path
                assert "audit log cannot be written" in text, path

    asyncio.run(scenario())
