"""Captures with no patient are held, not guessed; a technician assigns them, or the
hold expires to the temporary patient; a device's contradicting patient is held too.

The real context stage, intake and wrapping stage over a real ledger and spool.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.context.desk import (
    ContextError,
    ContextErrorCode,
    PickItem,
    TypedPatient,
    Unidentified,
)
from gateway.context.stage import MISMATCH_REASON
from gateway.core.capture import CaptureOffer, PatientContext
from gateway.spool import ledger as db
from tests.support.context import SCOPE, TECH, ContextRig, context_rig, item, jpeg

JANE = PatientContext(
    patient_name="Doe^Jane", patient_id="PID-4711", birth_date="19800229", sex="F"
)
SECRETS = ("PID-4711", "Doe", "Jane", "19800229")


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ContextRig]:
    async for r in context_rig(tmp_path, hold=3600):
        yield r


def offer(capture_id: str, data: bytes | None = None, **kw: object) -> CaptureOffer:
    """An offer; without ``data`` the size is not announced (the raw path, no inline)."""
    return CaptureOffer(capture_id, length=None if data is None else len(data), **kw)  # type: ignore[arg-type]


async def test_a_capture_without_a_session_is_held_then_assigned_to_a_typed_patient(
    rig: ContextRig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    data = jpeg(1)
    receipt = await rig.capture("scope", SCOPE, offer("h1", data), data)
    row = rig.row(receipt.spool_id)
    assert row["state"] == "HELD", "never written as DICOM while nobody knows the patient"
    assert row["reason"] == "no patient session was open on scope"
    assert row["dicom_name"] is None
    assert row["context_json"] is None
    await rig.wrap_all()
    assert rig.row(receipt.spool_id)["state"] == "HELD", "the wrapper leaves held captures"
    [held] = await rig.stage.held()
    assert (held.spool_id, held.device) == (receipt.spool_id, "scope")
    assert held.expires_at is not None
    assert held.expires_at > held.received_at

    released = await rig.stage.assign([receipt.spool_id], None, ("scope", TypedPatient(JANE)), TECH)
    assert released == [receipt.spool_id]
    assert await rig.stage.held() == []
    await rig.wrap_all()
    ds = rig.dicom(receipt.spool_id)
    assert (ds.PatientID, str(ds.PatientName), ds.PatientBirthDate) == (
        "PID-4711",
        "Doe^Jane",
        "19800229",
    )
    assert ds.SOPInstanceUID == receipt.sop_instance_uid, "same SOP Instance UID"
    [session] = await rig.stage.sessions()
    assert ds.StudyInstanceUID == session.study_uid
    assert session.captures == 1
    kinds = rig.kinds()
    assert "capture_held" in kinds
    assert "captures_released" in kinds
    assert f"moved to session {session.id} by user:tech" in caplog.text
    for secret in SECRETS:
        assert secret not in caplog.text


async def test_held_captures_of_a_session_follow_its_current_series(rig: ContextRig) -> None:
    """Assigned later, a capture says what it would have said had the session been open."""
    data = jpeg(2)
    early = await rig.capture("scope", SCOPE, offer("e1", data), data)
    session = await rig.stage.open_session("scope", TypedPatient(JANE), TECH)
    late = await rig.capture("scope", SCOPE, offer("e2", data := jpeg(3)), data)
    await rig.stage.assign([early.spool_id], session.id, None, TECH)
    await rig.wrap_all()
    a, b = rig.dicom(early.spool_id), rig.dicom(late.spool_id)
    assert a.StudyInstanceUID == b.StudyInstanceUID == session.study_uid
    assert a.SeriesInstanceUID == b.SeriesInstanceUID


async def test_when_the_hold_expires_the_capture_goes_out_under_a_temporary_patient(
    rig: ContextRig,
) -> None:
    data = jpeg(4)
    receipt = await rig.capture("scope", SCOPE, offer("x1", data), data)
    assert await rig.stage.expire_held() == 0, "not yet"
    later = datetime.now(UTC) + timedelta(seconds=3601)
    assert await rig.stage.expire_held(later) == 1
    await rig.wrap_all()
    ds = rig.dicom(receipt.spool_id)
    assert ds.PatientID == f"TMP-ctx-box-01-{receipt.spool_id}"
    assert ds.IssuerOfPatientID == "ctx-box-01-TEMP"
    assert str(ds.PatientName) == ""
    assert rig.row(receipt.spool_id)["session_id"] is None
    assert "captures_released" in rig.kinds()


async def test_the_stage_lets_holds_expire_on_its_own(tmp_path: Path) -> None:
    import asyncio

    async for rig in context_rig(tmp_path, hold=1):
        data = jpeg(5)
        receipt = await rig.capture("scope", SCOPE, offer("x2", data), data)
        task = asyncio.create_task(rig.stage.run(lambda: None))
        try:
            for _ in range(100):
                if rig.row(receipt.spool_id)["state"] != "HELD":
                    break
                await asyncio.sleep(0.1)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert rig.row(receipt.spool_id)["state"] == "CAPTURED"


async def test_a_device_patient_that_contradicts_the_session_is_held(rig: ContextRig) -> None:
    await rig.stage.open_session("scope", TypedPatient(JANE), TECH)
    other = PatientContext(patient_id="PID-9999", patient_name="Roe^Richard")
    data = jpeg(6)
    mismatch = await rig.capture("scope", SCOPE, offer("m1", data, patient=other), data)
    row = rig.row(mismatch.spool_id)
    assert (row["state"], row["reason"]) == ("HELD", MISMATCH_REASON)
    assert "PID" not in MISMATCH_REASON
    same = PatientContext(patient_id="PID-4711", issuer_of_patient_id="HOSP-MRN")
    agree = await rig.capture("scope", SCOPE, offer("m2", d := jpeg(7), patient=same), d)
    assert rig.row(agree.spool_id)["state"] == "WRAPPED"
    issuer = PatientContext(patient_id="PID-4711", issuer_of_patient_id="OTHER-HOSP")
    clash = await rig.capture("scope", SCOPE, offer("m3", d := jpeg(8), patient=issuer), d)
    assert rig.row(clash.spool_id)["state"] == "HELD", "same ID, another issuer: another person"


async def test_a_device_that_names_its_patient_is_not_held_without_a_session(
    rig: ContextRig,
) -> None:
    patient = PatientContext(patient_id="SCANNER-1")
    data = jpeg(9)
    receipt = await rig.capture("scope", SCOPE, offer("d1", data, patient=patient), data)
    assert rig.row(receipt.spool_id)["state"] == "WRAPPED"
    assert rig.dicom(receipt.spool_id).PatientID == "SCANNER-1"


async def test_wrapped_captures_not_yet_sent_can_be_moved_but_sent_ones_cannot(
    rig: ContextRig,
) -> None:
    wrong = await rig.stage.open_session("scope", Unidentified(), TECH)
    raw = await rig.capture("scope", SCOPE, offer("w1"), jpeg(10))
    inline = await rig.capture("scope", SCOPE, offer("w2", d := jpeg(11)), d)
    sent = await rig.capture("scope", SCOPE, offer("w3"), jpeg(12))
    await rig.wrap_all()
    assert {rig.row(r.spool_id)["state"] for r in (raw, inline, sent)} == {"WRAPPED"}
    await rig.ledger.call(db.record_sent, sent.spool_id, "pacs")
    old_file = rig.dirs.dicom / rig.row(raw.spool_id)["dicom_name"]
    right = await rig.stage.open_session("scope", TypedPatient(JANE), TECH)

    for ids, code in (
        ([raw.spool_id, sent.spool_id], ContextErrorCode.ALREADY_SENT),
        ([raw.spool_id, 999_999], ContextErrorCode.NOT_HELD),
        ([raw.spool_id, raw.spool_id], ContextErrorCode.BAD_REQUEST),
    ):
        with pytest.raises(ContextError) as err:
            await rig.stage.assign(ids, right.id, None, TECH)
        assert err.value.code is code
        row = rig.row(raw.spool_id)
        assert (row["state"], row["session_id"]) == ("WRAPPED", wrong.id), "all or nothing"

    await rig.stage.assign([raw.spool_id], right.id, None, TECH)
    row = rig.row(raw.spool_id)
    assert (row["state"], row["session_id"], row["dicom_name"]) == ("CAPTURED", right.id, None)
    assert not old_file.exists(), "the wrong patient's file is gone"
    conn_rows = await rig.ledger.call(
        lambda c: c.execute(
            "SELECT count(*) FROM deliveries WHERE capture_id = ?", (raw.spool_id,)
        ).fetchone()[0]
    )
    assert conn_rows == 0
    await rig.wrap_all()
    ds = rig.dicom(raw.spool_id)
    assert (ds.PatientID, ds.StudyInstanceUID) == ("PID-4711", right.study_uid)
    assert ds.SOPInstanceUID == raw.sop_instance_uid


async def test_a_capture_written_as_dicom_on_arrival_is_rewritten_when_moved(
    rig: ContextRig,
) -> None:
    wrong = await rig.stage.open_session("scope", Unidentified(), TECH)
    inline = await rig.capture("scope", SCOPE, offer("m1", d := jpeg(14)), d)
    row = rig.row(inline.spool_id)
    assert (row["state"], row["raw_name"]) == ("WRAPPED", ""), "written once, as DICOM"
    before = rig.dicom(inline.spool_id)
    right = await rig.stage.open_session("scope", TypedPatient(JANE), TECH)

    await rig.stage.assign([inline.spool_id], right.id, None, TECH)

    row = rig.row(inline.spool_id)
    assert (row["state"], row["session_id"]) == ("WRAPPED", right.id)
    pending = await rig.ledger.call(
        lambda c: c.execute(
            "SELECT state FROM deliveries WHERE capture_id = ?", (inline.spool_id,)
        ).fetchall()
    )
    assert [r[0] for r in pending] == ["PENDING"], "still waiting to be sent, once"
    ds = rig.dicom(inline.spool_id)
    assert (ds.PatientID, ds.StudyInstanceUID) == ("PID-4711", right.study_uid)
    assert (before.PatientID, before.StudyInstanceUID) != ("PID-4711", right.study_uid)
    assert before.StudyInstanceUID == wrong.study_uid
    assert ds.SOPInstanceUID == before.SOPInstanceUID == inline.sop_instance_uid
    assert ds.PixelData == before.PixelData, "the image is the device's, byte for byte"
    assert not list(rig.dirs.dicom.glob("*.moving")), "no leftovers"


async def test_assigning_to_an_ended_session_or_with_no_target_is_refused(
    rig: ContextRig,
) -> None:
    receipt = await rig.capture("scope", SCOPE, offer("n1"), jpeg(13))
    session = await rig.stage.open_session("scope", TypedPatient(JANE), TECH)
    await rig.stage.end_session(session.id, TECH)
    with pytest.raises(ContextError) as err:
        await rig.stage.assign([receipt.spool_id], session.id, None, TECH)
    assert err.value.code is ContextErrorCode.SESSION_CLOSED
    with pytest.raises(ContextError) as err:
        await rig.stage.assign([receipt.spool_id], None, None, TECH)
    assert err.value.code is ContextErrorCode.BAD_REQUEST
    with pytest.raises(ContextError) as err:
        await rig.stage.assign([], session.id, None, TECH)
    assert err.value.code is ContextErrorCode.BAD_REQUEST
    assert rig.row(receipt.spool_id)["state"] == "HELD"


async def test_assigning_to_a_worklist_item_opens_its_session(rig: ContextRig) -> None:
    study = "1.2.826.0.1.3680043.8.498.77"
    rig.set_worklist([item(1, patient_id="MRN-5", name="A^B", accession="ACC-5", study_uid=study)])
    receipt = await rig.capture("scope", SCOPE, offer("k1"), jpeg(14))
    await rig.stage.assign(
        [receipt.spool_id], None, ("scope", PickItem(accession_number="ACC-5")), TECH
    )
    await rig.wrap_all()
    ds = rig.dicom(receipt.spool_id)
    assert (ds.PatientID, ds.StudyInstanceUID, ds.AccessionNumber) == ("MRN-5", study, "ACC-5")


def codes(rig: ContextRig, spool_id: int) -> list[str]:
    """The Sensitive Content code values a capture was bound with."""
    context = json.loads(rig.row(spool_id)["context_json"])
    return [c["value"] for c in context["sensitive"]]


@pytest.mark.parametrize("configured", ["SCT:80248007", "80248007"])  # a bare value is SCT
async def test_sensitive_sites_and_flagged_sessions_get_their_codes(
    tmp_path: Path, configured: str
) -> None:
    rules = f"""
[[context.sensitive]]
sites = ["{configured}"]
scheme = "99CLINIC"
value = "GEN"
meaning = "Genital area"
"""
    async for rig in context_rig(tmp_path, extra=rules):
        session = await rig.stage.open_session("scope", TypedPatient(JANE), TECH)
        plain = await rig.capture("scope", SCOPE, offer("s1", d := jpeg(15)), d)
        site = await rig.capture(
            "scope", SCOPE, offer("s2", d := jpeg(16), anatomic_site="80248007"), d
        )
        await rig.stage.flag_session(session.id, True, TECH)
        flagged = await rig.capture("scope", SCOPE, offer("s3", d := jpeg(17)), d)
        assert codes(rig, plain.spool_id) == []
        assert codes(rig, site.spool_id) == ["GEN"]
        assert rig.row(site.spool_id)["sensitive"] == 1
        assert codes(rig, flagged.spool_id) == ["FLAGGED"], "the local default code"
        assert (await rig.stage.session(session.id)).sensitive


def object_codes(rig: ContextRig, spool_id: int) -> list[str]:
    """The Sensitive Content code values in a capture's DICOM file."""
    element = rig.dicom(spool_id).get(0x0008001D)
    return [] if element is None else [str(item.CodeValue) for item in element.value]


async def test_a_flagged_capture_carries_the_code_unless_it_was_sent(rig: ContextRig) -> None:
    await rig.stage.open_session("scope", TypedPatient(JANE), TECH)
    waiting = await rig.capture("scope", SCOPE, offer("f1", d := jpeg(31)), d)  # inline
    sent = await rig.capture("scope", SCOPE, offer("f2", d := jpeg(32)), d)
    await rig.ledger.call(db.record_sent, sent.spool_id, "pacs")
    before = rig.dicom(waiting.spool_id)
    assert object_codes(rig, waiting.spool_id) == []

    assert await rig.stage.flag_capture(waiting.spool_id, True, TECH)
    assert object_codes(rig, waiting.spool_id) == ["FLAGGED"]
    after = rig.dicom(waiting.spool_id)
    assert after.SOPInstanceUID == before.SOPInstanceUID
    assert after.PixelData == before.PixelData
    assert rig.row(waiting.spool_id)["state"] == "WRAPPED"
    assert rig.row(waiting.spool_id)["sensitive"] == 1

    assert not await rig.stage.flag_capture(sent.spool_id, True, TECH), "sent: box only"
    assert object_codes(rig, sent.spool_id) == []
    assert rig.row(sent.spool_id)["sensitive"] == 1

    assert await rig.stage.flag_capture(waiting.spool_id, False, TECH)
    assert object_codes(rig, waiting.spool_id) == [], "unflagged before it left: removed"


async def test_a_held_capture_flagged_gets_the_code_when_assigned(rig: ContextRig) -> None:
    holding = rig
    held = await holding.capture("scope", SCOPE, offer("f3"), jpeg(33))
    assert holding.row(held.spool_id)["state"] == "HELD"
    assert await holding.stage.flag_capture(held.spool_id, True, TECH)
    session = await holding.stage.open_session("scope", TypedPatient(JANE), TECH)
    await holding.stage.assign([held.spool_id], session.id, None, TECH)
    await holding.wrap_all()
    assert object_codes(holding, held.spool_id) == ["FLAGGED"]


async def test_a_device_lesion_label_is_tracked_per_patient(rig: ContextRig) -> None:
    """Until the lesion registry: the label and a Tracking UID from patient and label."""
    await rig.stage.open_session("scope", TypedPatient(JANE), TECH)
    a = await rig.capture("scope", SCOPE, offer("l1", d := jpeg(18), lesion_id="L03"), d)
    await rig.stage.open_session("scope", TypedPatient(PatientContext(patient_id="PID-2")), TECH)
    b = await rig.capture("scope", SCOPE, offer("l2", d := jpeg(19), lesion_id="L03"), d)
    la = json.loads(rig.row(a.spool_id)["context_json"])["lesion"]
    lb = json.loads(rig.row(b.spool_id)["context_json"])["lesion"]
    assert la["tracking_id"] == lb["tracking_id"] == "L03"
    assert la["tracking_uid"] != lb["tracking_uid"], "a label never spans two patients"
    assert json.loads(rig.row(a.spool_id)["context_json"])["series_description"] == (
        "Dermoscopy, lesion L03"
    )


async def test_the_state_document_shows_sessions_and_held_captures_by_id_only(
    rig: ContextRig,
) -> None:
    from gateway.devices.status import StatusBoard
    from gateway.spool.space import SpaceGuard
    from gateway.status.snapshot import GatewayState

    board = StatusBoard(None, rig.bus)
    for name in ("scope", "camera"):
        board.add(name, "serial-dermatoscope")
    state = GatewayState(
        gateway_id="ctx-box-01",
        software="0",
        ledger=rig.ledger,
        space=SpaceGuard(rig.dirs.root, 0, rig.ledger, rig.bus),
        board=board,
        forwarders=[],
        bus=rig.bus,
    )
    await rig.capture("scope", SCOPE, offer("z1"), jpeg(20))
    session = await rig.stage.open_session("scope", TypedPatient(JANE), TECH)
    document = await state.snapshot()
    assert document["spool"]["held"] == 1
    assert document["spool"]["counts"]["HELD"] == 1
    sessions = {d["name"]: d["session"] for d in document["devices"]}
    assert sessions == {"scope": session.id, "camera": None}
    text = json.dumps(document)
    for secret in SECRETS:
        assert secret not in text
