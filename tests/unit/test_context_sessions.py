"""Patient sessions bind captures at intake: the right patient, study, series and order.

The real context stage, intake and wrapping stage over a real ledger and spool
(:class:`tests.support.context.ContextRig`); the DICOM files they write are read
back with pydicom and checked with dciodvfy.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.context.desk import (
    ContextError,
    ContextErrorCode,
    PickItem,
    Scanned,
    TypedPatient,
    Unidentified,
)
from gateway.core.capture import CaptureOffer, PatientContext
from gateway.core.context import SessionSource
from gateway.core.uids import new_uid
from tests.support.context import CAMERA, SCOPE, TECH, ContextRig, context_rig, item, jpeg
from tests.support.dciodvfy import dciodvfy_errors

STUDY_A = "1.2.826.0.1.3680043.8.498.1001"
STUDY_B = "1.2.826.0.1.3680043.8.498.1002"
ALICE = item(1, patient_id="MRN-1001", name="Müller^Anna", accession="ACC-1001", study_uid=STUDY_A)
BOB = item(
    2,
    patient_id="MRN-1002",
    name="Okafor^Ben",
    accession="ACC-1002",
    study_uid=STUDY_B,
    sex="M",
    procedure="Total body photography",
)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ContextRig]:
    async for r in context_rig(tmp_path):
        yield r


@pytest.fixture
async def holding(tmp_path: Path) -> AsyncIterator[ContextRig]:
    async for r in context_rig(tmp_path, hold=3600):
        yield r


def offer(capture_id: str, data: bytes, **kw: object) -> CaptureOffer:
    return CaptureOffer(capture_id, length=len(data), **kw)  # type: ignore[arg-type]


async def test_two_worklist_patients_on_two_devices_get_their_own_study_and_order(
    rig: ContextRig,
) -> None:
    rig.set_worklist([ALICE, BOB])
    alice = await rig.stage.open_session("scope", PickItem(accession_number="ACC-1001"), TECH)
    bob = await rig.stage.open_session("camera", Scanned(patient_id="MRN-1002"), TECH)
    assert (alice.source, bob.source) == (SessionSource.WORKLIST, SessionSource.WORKLIST)
    assert alice.procedure == "Dermoscopy of pigmented lesions"
    first = await rig.capture("scope", SCOPE, offer("a1", data := jpeg(1)), data)
    second = await rig.capture("scope", SCOPE, offer("a2", data := jpeg(2)), data)
    third = await rig.capture("camera", CAMERA, offer("b1", data := jpeg(3)), data)
    await rig.wrap_all()

    a1, a2, b1 = (rig.dicom(r.spool_id) for r in (first, second, third))
    for ds in (a1, a2):
        assert (ds.PatientID, ds.IssuerOfPatientID) == ("MRN-1001", "HOSP-MRN")
        assert str(ds.PatientName) == "Müller^Anna"
        assert ds.StudyInstanceUID == STUDY_A
        assert ds.AccessionNumber == "ACC-1001"
    assert a1.SeriesInstanceUID == a2.SeriesInstanceUID, "one series per device and kind"
    assert a1.SOPInstanceUID == first.sop_instance_uid
    assert a1.SOPInstanceUID != a2.SOPInstanceUID
    assert (b1.PatientID, b1.StudyInstanceUID, b1.AccessionNumber) == (
        "MRN-1002",
        STUDY_B,
        "ACC-1002",
    )
    assert b1.SeriesInstanceUID != a1.SeriesInstanceUID
    for r in (first, third):
        path = rig.dirs.dicom / rig.row(r.spool_id)["dicom_name"]
        assert dciodvfy_errors(path) == []
    row = rig.row(first.spool_id)
    assert (row["device_name"], row["session_id"], row["state"]) == ("scope", alice.id, "WRAPPED")
    context = json.loads(row["context_json"])
    assert context["order"]["accession_number"] == "ACC-1001"
    assert context["operator_name"] == "Nurse^Anna"
    assert context["study_description"] == "Dermoscopy of pigmented lesions"
    assert context["series_description"] == "Dermoscopy"
    views = {v.id: v for v in await rig.stage.sessions()}
    assert views[alice.id].captures == 2
    assert views[bob.id].captures == 1


async def test_one_study_has_one_date_and_its_series_are_numbered(rig: ContextRig) -> None:
    rig.set_worklist([ALICE])
    await rig.stage.open_session("scope", PickItem(accession_number="ACC-1001"), TECH)
    await rig.stage.open_session("camera", PickItem(accession_number="ACC-1001"), TECH)
    scope = await rig.capture("scope", SCOPE, offer("d1", data := jpeg(21)), data)
    camera = await rig.capture("camera", CAMERA, offer("d2", data := jpeg(22)), data)
    again = await rig.capture("scope", SCOPE, offer("d3", data := jpeg(23)), data)
    await rig.wrap_all()
    s1, c1, s2 = (rig.dicom(r.spool_id) for r in (scope, camera, again))
    assert s1.StudyInstanceUID == c1.StudyInstanceUID == STUDY_A
    dates = {(ds.StudyDate, ds.StudyTime) for ds in (s1, c1, s2)}
    assert len(dates) == 1, "a viewer shows one study, not one per image time"
    assert s1.SeriesNumber == s2.SeriesNumber
    assert s1.SeriesInstanceUID != c1.SeriesInstanceUID
    assert {int(s1.SeriesNumber), int(c1.SeriesNumber)} == {1, 2}, "numbered within the study"
    assert (s1.InstanceNumber, s2.InstanceNumber, c1.InstanceNumber) == (1, 2, 1)


async def test_a_second_device_on_the_same_item_shares_its_study(rig: ContextRig) -> None:
    rig.set_worklist([ALICE])
    one = await rig.stage.open_session("scope", PickItem(sps_id="SPS1"), TECH)
    two = await rig.stage.open_session("camera", PickItem(item_key=ALICE.key), TECH)
    assert one.study_uid == two.study_uid == STUDY_A


async def test_typed_patients_get_one_minted_study_per_session(rig: ContextRig) -> None:
    typed = TypedPatient(PatientContext(patient_name="Doe^Jane", patient_id=" 778899 "))
    first = await rig.stage.open_session("scope", typed, TECH)
    assert first.patient.patient_id == "778899"
    assert first.patient.issuer_of_patient_id == "HOSP-MRN", "[context] issuer_of_patient_id"
    a = await rig.capture("scope", SCOPE, offer("t1", data := jpeg(4)), data)
    b = await rig.capture("scope", SCOPE, offer("t2", data := jpeg(5)), data)
    second = await rig.stage.open_session("scope", typed, TECH)
    c = await rig.capture("scope", SCOPE, offer("t3", data := jpeg(6)), data)
    await rig.wrap_all()
    da, db_, dc = (rig.dicom(r.spool_id) for r in (a, b, c))
    assert da.StudyInstanceUID == db_.StudyInstanceUID == first.study_uid
    assert dc.StudyInstanceUID == second.study_uid != first.study_uid
    assert da.AccessionNumber == "", "accession numbers are never invented"
    assert (await rig.stage.session(first.id)).closed_at is not None, "switching ended it"
    assert [s.id for s in await rig.stage.sessions()] == [second.id]


async def test_switching_and_ending_publish_events_without_patient_data(rig: ContextRig) -> None:
    typed = TypedPatient(PatientContext(patient_id="PID-SECRET-1"))
    first = await rig.stage.open_session("scope", typed, TECH)
    await rig.stage.open_session("scope", Unidentified(), TECH)
    opened = await rig.stage.open_session("camera", typed, TECH)
    await rig.stage.end_session(opened.id, TECH)
    kinds = []
    while len(rig.events):
        seq, event = rig.events.peek()
        rig.events.pop(seq)
        kinds.append(event["kind"])
        assert "PID-SECRET" not in json.dumps(event)
    assert kinds == [
        "session_opened",
        "session_ended",
        "session_opened",
        "session_opened",
        "session_ended",
    ]
    with pytest.raises(ContextError) as err:
        await rig.stage.end_session(opened.id, TECH)
    assert err.value.code is ContextErrorCode.SESSION_CLOSED
    with pytest.raises(ContextError) as err:
        await rig.stage.end_session(first.id + 100, TECH)
    assert err.value.code is ContextErrorCode.NO_SUCH_SESSION


@pytest.mark.parametrize(
    ("patient", "fragment"),
    [
        (PatientContext(patient_id="  "), "required"),
        (PatientContext(patient_id="A\\B"), "Patient ID"),
        (PatientContext(patient_id="X" * 65), "Patient ID"),
        (PatientContext(patient_id="P\n1"), "Patient ID"),
        (PatientContext(patient_id="P1", birth_date="20230231"), "birth date"),
        (PatientContext(patient_id="P1", birth_date="1970-01-01"), "birth date"),
        (PatientContext(patient_id="P1", sex="X"), "sex"),
        (PatientContext(patient_id="P1", patient_name="A^B^C^D^E^F"), "name"),
    ],
)
async def test_bad_typed_patients_are_refused_without_quoting_them(
    rig: ContextRig, patient: PatientContext, fragment: str
) -> None:
    with pytest.raises(ContextError) as err:
        await rig.stage.open_session("scope", TypedPatient(patient), TECH)
    assert err.value.code is ContextErrorCode.BAD_PATIENT
    assert fragment in err.value.message
    for value in (patient.patient_id.strip(), patient.birth_date, patient.patient_name):
        if value:
            assert value not in err.value.message
    assert await rig.stage.sessions() == []


async def test_worklist_requests_that_match_none_or_several_are_refused(rig: ContextRig) -> None:
    twin = item(3, patient_id="MRN-1001", name="Müller^Anna", accession="ACC-2", study_uid="1.2.3")
    rig.set_worklist([ALICE, BOB, twin])
    cases = [
        ("scope", PickItem(accession_number="ACC-404"), ContextErrorCode.NO_SUCH_ITEM),
        ("scope", Scanned(accession_number="ACC-404"), ContextErrorCode.NO_SUCH_ITEM),
        ("scope", Scanned(patient_id="MRN-1001"), ContextErrorCode.AMBIGUOUS_ITEM),
        ("scope", PickItem(), ContextErrorCode.BAD_REQUEST),
        ("nowhere", PickItem(accession_number="ACC-1001"), ContextErrorCode.UNKNOWN_DEVICE),
    ]
    for device, request, code in cases:
        with pytest.raises(ContextError) as err:
            await rig.stage.open_session(device, request, TECH)
        assert err.value.code is code
        assert "MRN" not in err.value.message
        assert "ACC" not in err.value.message


async def test_a_scanned_id_without_a_worklist_item_is_taken_as_the_patient_id(
    rig: ContextRig,
) -> None:
    rig.set_worklist([ALICE])
    view = await rig.stage.open_session("scope", Scanned(patient_id="WRIST-55"), TECH)
    assert view.source is SessionSource.BARCODE
    assert (view.patient.patient_id, view.patient.issuer_of_patient_id) == ("WRIST-55", "HOSP-MRN")
    assert view.accession_number == ""


async def test_an_unidentified_session_uses_a_temporary_patient_that_cannot_collide(
    rig: ContextRig,
) -> None:
    one = await rig.stage.open_session("scope", Unidentified(), TECH)
    two = await rig.stage.open_session("camera", Unidentified(), TECH)
    assert one.patient.patient_id.startswith("TMP-ctx-box-01-")
    assert one.patient.issuer_of_patient_id == "ctx-box-01-TEMP"
    assert one.patient.patient_id != two.patient.patient_id
    assert one.patient.patient_name == ""
    receipt = await rig.capture("scope", SCOPE, offer("u1", data := jpeg(7)), data)
    assert receipt.spool_id != int(one.patient.patient_id.rsplit("-", 1)[1])
    await rig.wrap_all()
    ds = rig.dicom(receipt.spool_id)
    assert (ds.PatientID, str(ds.PatientName)) == (one.patient.patient_id, "")
    assert ds.StudyInstanceUID == one.study_uid


async def test_operator_name_is_left_out_when_configured_off(tmp_path: Path) -> None:
    async for rig in context_rig(tmp_path, extra="operator_name = false"):
        view = await rig.stage.open_session("scope", Unidentified(), TECH)
        assert view.operator_name == ""


async def test_a_re_offer_after_a_switch_changes_nothing(rig: ContextRig) -> None:
    first = await rig.stage.open_session("scope", Unidentified(), TECH)
    data = jpeg(8)
    receipt = await rig.capture("scope", SCOPE, offer("r1", data), data)
    await rig.stage.open_session("scope", Unidentified(), TECH)
    again = await rig.capture("scope", SCOPE, offer("r1", data), data)
    assert again.duplicate
    assert again.spool_id == receipt.spool_id
    assert rig.row(receipt.spool_id)["session_id"] == first.id


async def test_files_of_one_export_share_the_study_their_first_file_got(rig: ContextRig) -> None:
    """A 3D export's files keep their driver-chosen series; only the study changes,
    and a session switched in the middle does not split the export."""
    from gateway.core.capture import InstanceUIDs

    export_study, mesh, texture = new_uid(), new_uid(), new_uid()
    first_session = await rig.stage.open_session("camera", Unidentified(), TECH)
    uids1 = InstanceUIDs(export_study, mesh, new_uid())
    one = await rig.capture("camera", CAMERA, offer("x1", d := jpeg(9), uids=uids1), d)
    await rig.stage.open_session("camera", Unidentified(), TECH)
    uids2 = InstanceUIDs(export_study, texture, new_uid())
    two = await rig.capture("camera", CAMERA, offer("x2", d := jpeg(10), uids=uids2), d)
    r1, r2 = rig.row(one.spool_id), rig.row(two.spool_id)
    assert r1["study_uid"] == r2["study_uid"] == first_session.study_uid
    assert (r1["series_uid"], r2["series_uid"]) == (mesh, texture)
    assert (r1["sop_instance_uid"], r2["sop_instance_uid"]) == (
        uids1.sop_instance,
        uids2.sop_instance,
    )
    assert r1["session_id"] == r2["session_id"] == first_session.id


class StepLog:
    """Procedure step hooks that record what the session logic told them (MPPS's
    place; ``fail`` makes every call raise, as an MPPS SCP that is away might)."""

    def __init__(self, *, fail: bool = False) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail = fail

    async def first_capture(self, session_id: int) -> None:
        self.calls.append(("first_capture", session_id))
        if self.fail:
            raise ConnectionError("MPPS SCP away")

    async def session_ended(self, session_id: int) -> None:
        self.calls.append(("session_ended", session_id))
        if self.fail:
            raise ConnectionError("MPPS SCP away")


@pytest.mark.parametrize("fail", [False, True])
async def test_worklist_sessions_tell_mpps_their_first_capture_and_their_end(
    tmp_path: Path, fail: bool
) -> None:
    steps = StepLog(fail=fail)
    async for rig in context_rig(tmp_path, steps=steps):
        rig.set_worklist([ALICE])
        typed = await rig.stage.open_session(
            "camera", TypedPatient(PatientContext(patient_id="P-1")), TECH
        )
        await rig.capture("camera", CAMERA, offer("c1", d := jpeg(20)), d)
        await rig.stage.end_session(typed.id, TECH)
        session = await rig.stage.open_session("scope", PickItem(sps_id="SPS1"), TECH)
        one = await rig.capture("scope", SCOPE, offer("m1", d := jpeg(21)), d)
        two = await rig.capture("scope", SCOPE, offer("m2", d := jpeg(22)), d)
        await rig.stage.end_session(session.id, TECH)
        assert steps.calls == [("first_capture", session.id), ("session_ended", session.id)]
        states = {rig.row(r.spool_id)["state"] for r in (one, two)}
        assert states == {"WRAPPED"}, "MPPS never costs a capture"
