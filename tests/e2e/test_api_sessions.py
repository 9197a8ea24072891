"""Patient sessions and held captures through the integration API of a real
``dermgate run``: a kiosk with a token opens a typed patient's session, assigns the
captures held for want of a patient to it (or to a new session named in the same
request), ends it; the captures reach Orthanc under that patient; every answer with
patient data is audited; the log and MQTT never see the patient."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from gateway.demo.local_orthanc import OrthancProcess
from tests.support.api import api_config, call, start_service, token_add
from tests.support.gateway_process import GatewayProcess
from tests.support.mqtt import Mosquitto, Recorder
from tests.support.privacy import PATIENTS, LeakScanner
from tests.support.simulator import SimulatorProcess
from tests.support.state import ledger_rows
from tests.support.waiting import wait_for

FIRST, SECOND = PATIENTS[0], PATIENTS[2]


def _typed(patient: Any, sex: str) -> dict[str, str]:
    return {"id": patient.id, "issuer": "HOSP", "name": patient.name,
            "birth_date": patient.birth_date, "sex": sex}  # fmt: skip


def _config(tmp_path: Path, orthanc: OrthancProcess, mosquitto: Mosquitto) -> tuple[Path, str]:
    extra = f"""
[context]
hold_unidentified = 600

[[destinations]]
name = "pacs"
kind = "dicom"
ae_title = "{orthanc.aet}"
host = "127.0.0.1"
port = {orthanc.dicom_port}
connect_timeout = 3

[[devices]]
driver = "serial-dermatoscope"
name = "scope"
port = "{tmp_path / "ttyDERM0"}"
stall_timeout = 5
reconnect_max = 1

{mosquitto.config_section()}
"""
    return api_config(tmp_path, extra=extra)


def _stored_patients(orthanc: OrthancProcess, state_dir: Path) -> dict[int, tuple[str, str]]:
    """Spool id -> (PatientID, PatientName) as Orthanc stored each capture."""
    found: dict[int, tuple[str, str]] = {}
    for row in ledger_rows(state_dir):
        ids = orthanc.find_instances(str(row["sop_instance_uid"]))
        if len(ids) == 1:
            tags = orthanc.rest("GET", f"/instances/{ids[0]}/simplified-tags")
            found[int(row["id"])] = (tags["PatientID"], tags["PatientName"])
    return found


def test_a_kiosk_opens_sessions_and_assigns_held_captures_over_the_api(
    tmp_path: Path,
    orthanc: OrthancProcess,
    mosquitto: Mosquitto,
    recorder_factory: Callable[..., Recorder],
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    config, base = _config(tmp_path, orthanc, mosquitto)
    token = token_add(config, "kiosk")
    rec = recorder_factory(mosquitto, ["#"])
    sim = simulator_factory("--captures", "2", "--interval", "0.2")
    gateway = start_service(gateway_factory, config, base)
    state_dir = tmp_path / "state"
    answers: list[str] = []
    ids: dict[str, int] = {}

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:

            async def api(method: str, path: str, body: Any = None) -> Any:
                answer = await call(s, method, base + path, token=token, body=body)
                answers.append(answer.text)
                return answer

            # No session was open: both captures are held, shown without patient data.
            held: list[dict[str, Any]] = []
            for _ in range(120):
                held = (await api("GET", "/api/v1/held")).body["held"]
                if len(held) == 2:
                    break
                await asyncio.sleep(0.5)
            assert len(held) == 2, gateway.log()[-3000:]
            for entry in held:
                assert set(entry) == {"spool_id", "device", "received_at", "reason", "expires_at"}
                assert entry["device"] == "scope"
                assert entry["expires_at"] is not None
            first_id, second_id = (entry["spool_id"] for entry in held)
            ids.update(first=first_id, second=second_id)

            empty = await api("GET", "/api/v1/worklist")
            assert (empty.status, empty.body) == (200, {"items": [], "status": None})

            opened = await api("POST", "/api/v1/sessions", {
                "device": "scope", "patient": _typed(FIRST, "F"), "operator": "Kiosk^Kim"})  # fmt: skip
            assert opened.status == 201, opened.text
            session = opened.body["session"]
            assert isinstance(session, int)
            assert opened.body["device"] == "scope"
            assert opened.body["source"] == "manual"
            assert opened.body["open"] is True
            assert opened.body["opened_by"] == "token:kiosk"
            assert opened.body["operator"] == "Kiosk^Kim"
            assert opened.body["patient"] == _typed(FIRST, "F")
            assert opened.body["study_instance_uid"]

            listed = await api("GET", "/api/v1/sessions")
            assert [v["session"] for v in listed.body["sessions"]] == [session]
            one = await api("GET", f"/api/v1/sessions/{session}")
            assert one.body["patient"]["id"] == FIRST.id

            assigned = await api("POST", "/api/v1/held/assign",
                                 {"spool_ids": [first_id], "session": session})  # fmt: skip
            assert (assigned.status, assigned.body) == (
                200, {"released": [first_id], "session": session})  # fmt: skip

            # The second goes to a new session named in the same request; it replaces
            # the first on the device (one open session per device).
            to_new = await api("POST", "/api/v1/held/assign", {
                "spool_ids": [second_id], "device": "scope", "patient": _typed(SECOND, "M")})  # fmt: skip
            assert to_new.status == 200, to_new.text
            assert to_new.body["released"] == [second_id]
            second_session = to_new.body["session"]
            assert isinstance(second_session, int)
            assert second_session != session
            assert (await api("GET", "/api/v1/held")).body == {"held": []}

            everything = await api("GET", "/api/v1/sessions?all=1")
            by_id = {v["session"]: v for v in everything.body["sessions"]}
            assert by_id[session]["open"] is False, "switching the device ended the first"
            assert by_id[second_session]["open"] is True

            ended = await api("DELETE", f"/api/v1/sessions/{second_session}")
            assert ended.status == 200
            assert ended.body["closed_at"] is not None
            again = await api("DELETE", f"/api/v1/sessions/{second_session}")
            assert (again.status, again.code) == (409, "session_closed")

            refusals = [
                (await api("GET", "/api/v1/sessions/987654"), 404, "no_such_session"),
                (
                    await api(
                        "POST", "/api/v1/sessions", {"device": "nosuch", "unidentified": True}
                    ),
                    422,
                    "unknown_device",
                ),
                (
                    await api(
                        "POST", "/api/v1/sessions", {"device": "scope", "accession_number": "NOPE1"}
                    ),
                    404,
                    "no_such_item",
                ),
                (
                    await api(
                        "POST", "/api/v1/held/assign", {"spool_ids": [first_id], "session": session}
                    ),
                    409,
                    None,
                ),
                (
                    await api(
                        "POST",
                        "/api/v1/held/assign",
                        {"spool_ids": [424242], "session": second_session},
                    ),
                    409,
                    None,
                ),
            ]
            for answer, status, code in refusals:
                assert answer.status == status, answer.text
                assert code is None or answer.code == code, answer.text

    asyncio.run(scenario())
    assert sim.wait(120) == 0

    wait_for(lambda: len(_stored_patients(orthanc, state_dir)) == 2, 90, "both captures in Orthanc")
    stored = _stored_patients(orthanc, state_dir)
    assert stored[ids["first"]][0] == FIRST.id
    assert stored[ids["second"]][0] == SECOND.id

    audit = (state_dir / "web" / "audit.log").read_text()
    assert "user=kiosk action=api.session.open via=token" in audit
    assert "action=api.assign via=token spool_id=" in audit
    assert "action=api.sessions via=token records=" in audit
    assert gateway.stop() == 0

    leaks = LeakScanner([s for p in (FIRST, SECOND) for s in p.secrets("patient")])
    for n, line in enumerate(gateway.log().splitlines(), 1):
        leaks.scan(f"gateway log line {n}", line, "log")
    for n, message in enumerate(rec.all(), 1):
        leaks.scan(f"MQTT message #{n} on {message.topic!r}", message.payload, "mqtt")
    leaks.scan("audit log", audit, "audit")
    leaks.assert_clean()
    assert leaks.scanned["mqtt"] > 5
    joined = "\n".join(answers)
    assert FIRST.id in joined, "the authenticated kiosk does see its patients"
    assert token not in gateway.log()


def test_lesions_are_chosen_over_the_api_per_patient(
    tmp_path: Path, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    device = f"""
[[devices]]
driver = "serial-dermatoscope"
name = "scope"
port = "{tmp_path / "ttyNOBODY"}"
"""
    config, base = api_config(tmp_path, extra=device)
    token = token_add(config, "ehr")
    start_service(gateway_factory, config, base)
    mole = {"site": "SCT:66643007", "laterality": "L", "description": "mole"}

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:

            async def api(method: str, path: str, body: Any = None) -> Any:
                return await call(s, method, base + path, token=token, body=body)

            first = await api("POST", "/api/v1/sessions",
                              {"device": "scope", "patient": _typed(FIRST, "F")})  # fmt: skip
            a = first.body["session"]
            created = await api("POST", f"/api/v1/sessions/{a}/lesion", mole)
            assert created.status == 201, created.text
            lesion = created.body
            assert lesion["site"] == "SCT:66643007"
            assert lesion["site_meaning"] == "Skin of back"
            assert lesion["laterality"] == "L"
            assert lesion["tracking_id"]
            assert lesion["tracking_uid"].startswith(("1.", "2."))
            found = await api("POST", f"/api/v1/sessions/{a}/lesion", mole)
            assert (found.status, found.body) == (200, lesion)
            by_label = await api("POST", f"/api/v1/sessions/{a}/lesion",
                                 {"tracking_id": lesion["tracking_id"]})  # fmt: skip
            assert (by_label.status, by_label.body) == (200, lesion)
            registry = await api("GET", f"/api/v1/sessions/{a}/lesions")
            assert registry.body == {"lesions": [lesion]}
            shown = await api("GET", f"/api/v1/sessions/{a}")
            assert shown.body["lesion"] == lesion
            unknown = await api("POST", f"/api/v1/sessions/{a}/lesion", {"site": "SCT:40983000"})
            assert (unknown.status, unknown.code) == (422, "unknown_site")

            # Another patient on the same device: the label names no lesion of theirs,
            # and the same site is a lesion of their own with its own Tracking UID.
            second = await api("POST", "/api/v1/sessions",
                               {"device": "scope", "patient": _typed(SECOND, "M")})  # fmt: skip
            b = second.body["session"]
            foreign = await api("POST", f"/api/v1/sessions/{b}/lesion",
                                {"tracking_id": lesion["tracking_id"]})  # fmt: skip
            assert (foreign.status, foreign.code) == (422, "bad_lesion")
            theirs = await api("POST", f"/api/v1/sessions/{b}/lesion", mole)
            assert theirs.status == 201
            assert theirs.body["tracking_uid"] != lesion["tracking_uid"]
            closed = await api("POST", f"/api/v1/sessions/{a}/lesion", mole)
            assert (closed.status, closed.code) == (409, "session_closed")
            nowhere = await api("POST", "/api/v1/sessions/987654/lesion", mole)
            assert (nowhere.status, nowhere.code) == (404, "no_such_session")

            # Unidentified: a temporary Patient ID, never a made-up name.
            anonymous = await api("POST", "/api/v1/sessions",
                                  {"device": "scope", "unidentified": True})  # fmt: skip
            assert anonymous.status == 201
            assert anonymous.body["source"] == "unidentified"
            assert anonymous.body["patient"]["id"]
            assert anonymous.body["patient"]["name"] == ""
            assert anonymous.body["operator"] == ""

    asyncio.run(scenario())
    audit = (tmp_path / "state" / "web" / "audit.log").read_text()
    assert audit.count("user=ehr action=api.lesion via=token") == 4
    assert "action=api.lesions via=token session=" in audit
