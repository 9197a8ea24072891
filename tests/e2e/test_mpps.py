"""MPPS: a worklist session's procedure step reaches the RIS, in order, and never
COMPLETED before every instance is stored.

The stage runs in-process over a real ledger in tmp and talks to a real pynetdicom
MPPS SCP (tests/support/mpps_scp.py) or to a real Orthanc (which refuses MPPS).
Sessions are rows of the ``sessions`` table written with plain SQL of schema v6 (the
sessions module is another branch's); captures are recorded, bound and delivered
with the spool's own functions (``insert_capture``, ``record_sent``).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from gateway.context.mpps import ProcedureSteps
from gateway.core.capture import CaptureOffer, InstanceUIDs, PatientContext
from gateway.core.config.context import WorklistSettings
from gateway.core.context import Coded, OrderContext, RequestedProcedure, SessionSource
from gateway.core.events import EventBus, ProcedureStepFailed, ProcedureStepReported
from gateway.core.procedure_step import StepErrorCode, StepStatus
from gateway.core.uids import new_uid
from gateway.demo.local_orthanc import OrthancProcess
from gateway.spool import ledger as db
from gateway.spool import mpps_queue as mq
from gateway.spool.ledger import Ledger
from gateway.spool.records import patient_to_json
from tests.support.dicom_files import DEVICE
from tests.support.mpps_scp import MAY_NO_LONGER_BE_UPDATED, MppsScp

DERMOSCOPY = "1.2.840.10008.5.1.4.1.1.77.1.4.1"
OBJ_MESH = "1.2.840.10008.5.1.4.1.1.104.4"
JPEG = "1.2.840.10008.1.2.4.50"
DESTINATIONS = ("pacs", "archive")

PATIENT = PatientContext(
    patient_name="Müller^Jürgen",
    patient_id="MRN-20417",
    issuer_of_patient_id="HOSP",
    birth_date="19610305",
    sex="M",
)
SECRETS = ("Müller", "Jürgen", "MRN-20417", "19610305", "ACC-77123", "Mole check")


def _order(study_uid: str, accession: str = "ACC-77123") -> OrderContext:
    protocol = Coded("DERM01", "99RIS", "Dermoscopy of a lesion")
    return OrderContext(
        accession_number=accession,
        referring_physician="Haus^Gregory",
        study_id="RP-9",
        referenced_study_uids=(study_uid,),
        procedure_codes=(Coded("PROC7", "99RIS", "Skin lesion imaging"),),
        request=RequestedProcedure(
            requested_procedure_id="RP-9",
            accession_number=accession,
            study_uid=study_uid,
            requested_procedure_description="Mole check",
            requested_procedure_codes=(Coded("PROC7", "99RIS", "Skin lesion imaging"),),
            sps_id="SPS-31",
            sps_description="Dermoscopy, left forearm",
            protocol_codes=(protocol,),
        ),
    )


def _insert_session(
    conn: sqlite3.Connection, device: str, source: SessionSource, study_uid: str
) -> int:
    order = None if source is not SessionSource.WORKLIST else _order(study_uid)
    cur = conn.execute(
        "INSERT INTO sessions (device, source, patient_json, order_json, worklist_key, "
        "study_uid, study_description, opened_at, opened_by, operator_name) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            device,
            source,
            patient_to_json(PATIENT),
            None if order is None else mq.ORDER_RECORD.dump_json(order).decode(),
            "item-1" if order is not None else None,
            study_uid,
            "Mole check",
            db.utc_now_text(),
            "user:tech",
            "Nurse^Nina",
        ),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def _close_session(conn: sqlite3.Connection, session_id: int) -> None:
    conn.execute(
        "UPDATE sessions SET closed_at = ?, closed_by = ? WHERE id = ?",
        (db.utc_now_text(), "user:tech", session_id),
    )


def _bind_capture(
    conn: sqlite3.Connection,
    session_id: int,
    uids: InstanceUIDs,
    sop_class: str,
    series_description: str,
) -> int:
    """A capture wrapped at intake, pending at every destination, bound to the session."""
    spool_id = db.insert_capture(
        conn,
        driver="testdriver",
        device=DEVICE,
        offer=CaptureOffer(device_capture_id=uids.sop_instance[-12:]),
        uids=uids,
        raw_name="",
        raw_size=0,
        raw_sha256="",
        wrapped=db.WrappedAtIntake(f"{uids.sop_instance}.dcm", sop_class, JPEG, DESTINATIONS),
    )
    conn.execute(
        "UPDATE captures SET session_id = ?, device_name = ?, context_json = ? WHERE id = ?",
        (session_id, "scope", f'{{"series_description": "{series_description}"}}', spool_id),
    )
    return spool_id


@dataclass
class Box:
    """The ledger and the MPPS stage under test, with what the bus saw."""

    ledger: Ledger
    steps: ProcedureSteps
    events: list[dict[str, Any]]
    devices: int = 0

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.ledger.call(fn, *args)

    async def session(self, source: SessionSource = SessionSource.WORKLIST) -> int:
        """A new open session, on a device of its own (one open session per device)."""
        self.devices += 1
        device = f"device-{self.devices}"
        return int(await self.call(_insert_session, device, source, new_uid()))

    async def capture(
        self, session_id: int, series: str, sop_class: str = DERMOSCOPY, description: str = ""
    ) -> tuple[int, str]:
        study = await self.call(
            lambda c: c.execute(
                "SELECT study_uid FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()[0]
        )
        uids = InstanceUIDs(study, series, new_uid())
        spool_id = await self.call(_bind_capture, session_id, uids, sop_class, description)
        return int(spool_id), uids.sop_instance

    async def stored(self, spool_id: int, *destinations: str) -> None:
        for name in destinations or DESTINATIONS:
            await self.call(db.record_sent, spool_id, name)

    async def end(self, session_id: int) -> None:
        await self.call(_close_session, session_id)
        await self.steps.session_ended(session_id)

    async def step(self, session_id: int) -> mq.QueuedStep:
        step = await self.call(mq.get_step, session_id)
        assert step is not None
        return step  # type: ignore[no-any-return]


def _settings(port: int, ae_title: str = "RIS") -> WorklistSettings:
    return WorklistSettings.model_validate(
        {"ae_title": ae_title, "host": "127.0.0.1", "port": port, "mpps": True, "timeout": 5}
    )


@asynccontextmanager
async def running_box(
    path: Path, settings: WorklistSettings, *, start: bool = True
) -> AsyncIterator[Box]:
    """A ledger at ``path`` and the MPPS stage running on it (short retries)."""
    ledger = Ledger(path)
    await asyncio.to_thread(ledger.start)
    bus = EventBus()
    bus.bind(asyncio.get_running_loop())
    subscription = bus.subscribe()
    events: list[dict[str, Any]] = []
    steps = ProcedureSteps(
        ledger,
        settings,
        "DERMGATE",
        bus,
        station_name="box-1",
        retry_initial=0.2,
        retry_max=0.5,
        poll=0.2,
    )

    async def collect() -> None:
        while True:
            events.append((await subscription.get())[1])

    collector = asyncio.create_task(collect())
    worker = None
    if start:
        started = asyncio.Event()
        worker = asyncio.create_task(steps.run(started.set))
        await started.wait()
    try:
        yield Box(ledger, steps, events)
    finally:
        for task in (worker, collector):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await asyncio.to_thread(ledger.close)


async def until(predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Poll ``predicate`` on the event loop until truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _statuses(scp: MppsScp, uid: str) -> list[tuple[str, str]]:
    return [(r.message, str(r.dataset.PerformedProcedureStepStatus)) for r in scp.messages(uid)]


def _refs(item: Dataset, keyword: str) -> list[tuple[str, str]]:
    return [
        (str(r.ReferencedSOPClassUID), str(r.ReferencedSOPInstanceUID)) for r in item[keyword].value
    ]


async def test_in_progress_at_the_first_capture_completed_only_once_everything_is_stored(
    tmp_path: Path, mpps_scp: MppsScp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    mpps_scp.start()
    async with running_box(tmp_path / "ledger.sqlite3", _settings(mpps_scp.port)) as box:
        session = await box.session()
        image_series, mesh_series = new_uid(), new_uid()
        first, first_uid = await box.capture(session, image_series, description="Dermoscopy L")
        await box.steps.first_capture(session)
        created = await until(lambda: mpps_scp.messages(), "the N-CREATE")
        second, second_uid = await box.capture(session, image_series)
        mesh, mesh_uid = await box.capture(session, mesh_series, OBJ_MESH, "3D scan mesh")
        await box.steps.first_capture(session)  # a second call changes nothing

        create = created[0]
        assert create.message == "N-CREATE"
        assert create.status == 0
        assert create.calling_ae == "DERMGATE"
        ds = create.dataset
        assert ds.PerformedProcedureStepStatus == "IN PROGRESS"
        assert str(ds.PatientName) == "Müller^Jürgen"  # UTF-8, as declared
        assert (ds.PatientID, ds.IssuerOfPatientID) == ("MRN-20417", "HOSP")
        assert (ds.PatientBirthDate, ds.PatientSex) == ("19610305", "M")
        scheduled = ds.ScheduledStepAttributesSequence[0]
        study_uid = scheduled.StudyInstanceUID
        assert scheduled.AccessionNumber == "ACC-77123"
        assert scheduled.ReferencedStudySequence[0].ReferencedSOPInstanceUID == study_uid
        assert (scheduled.RequestedProcedureID, scheduled.RequestedProcedureDescription) == (
            "RP-9",
            "Mole check",
        )
        assert scheduled.ScheduledProcedureStepID == "SPS-31"
        assert scheduled.ScheduledProcedureStepDescription == "Dermoscopy, left forearm"
        assert scheduled.ScheduledProtocolCodeSequence[0].CodeValue == "DERM01"
        assert ds.PerformedStationAETitle == "DERMGATE"
        assert ds.PerformedStationName == "box-1"
        assert ds.PerformedProcedureStepID
        assert len(ds.PerformedProcedureStepID) <= 16
        assert len(ds.PerformedProcedureStepStartDate) == 8
        assert ds.PerformedProcedureStepStartTime
        assert ds.PerformedProcedureStepEndDate == ""
        assert ds.PerformedSeriesSequence == []
        assert ds.Modality == "XC"
        assert ds.StudyID == "RP-9"
        assert ds.ProcedureCodeSequence[0].CodeValue == "PROC7"
        await until(lambda: box.events, "the acknowledgement to be recorded")
        step = await box.step(session)
        assert step.acknowledged is StepStatus.IN_PROGRESS
        assert create.sop_instance_uid == step.sop_instance_uid

        await box.end(session)
        await box.stored(first)
        await box.stored(second)
        await box.stored(mesh, "pacs")  # the archive does not have the mesh yet
        await asyncio.sleep(1.5)  # several passes of the worker (poll 0.2 s)
        assert _statuses(mpps_scp, step.sop_instance_uid) == [("N-CREATE", "IN PROGRESS")]
        assert box.steps.status()["waiting_for_storage"] == 1
        assert (await box.step(session)).acknowledged is StepStatus.IN_PROGRESS

        await box.stored(mesh, "archive")
        await until(lambda: len(mpps_scp.messages()) == 2, "the N-SET")
        final = mpps_scp.messages()[1]
        assert (final.message, final.status) == ("N-SET", 0)
        assert final.sop_instance_uid == step.sop_instance_uid
        mods = final.dataset
        assert mods.PerformedProcedureStepStatus == "COMPLETED"
        assert len(mods.PerformedProcedureStepEndDate) == 8
        assert mods.PerformedProcedureStepEndTime
        series = {item.SeriesInstanceUID: item for item in mods.PerformedSeriesSequence}
        assert set(series) == {image_series, mesh_series}
        images = series[image_series]
        assert _refs(images, "ReferencedImageSequence") == [
            (DERMOSCOPY, first_uid),
            (DERMOSCOPY, second_uid),
        ]
        assert images.ReferencedNonImageCompositeSOPInstanceSequence == []
        assert images.SeriesDescription == "Dermoscopy L"
        assert images.ProtocolName == "Dermoscopy, left forearm"
        assert images.OperatorsName == "Nurse^Nina"
        meshes = series[mesh_series]
        assert meshes.ReferencedImageSequence == []
        assert _refs(meshes, "ReferencedNonImageCompositeSOPInstanceSequence") == [
            (OBJ_MESH, mesh_uid)
        ]
        assert study_uid == (await box.call(mq.step_material, session)).study_uid
        await until(lambda: len(box.events) == 2, "two events")
        assert [(e["kind"], e["session_id"], e["status"]) for e in box.events] == [
            (ProcedureStepReported.kind, session, "IN PROGRESS"),
            (ProcedureStepReported.kind, session, "COMPLETED"),
        ]
        assert (await box.step(session)).acknowledged is StepStatus.COMPLETED
        assert box.steps.status() == {
            "queued": 0,
            "waiting_for_storage": 0,
            "failed": 0,
            "reachable": True,
            "last_error": None,
        }
    assert [r.message for r in mpps_scp.messages()] == ["N-CREATE", "N-SET"]
    for secret in SECRETS:
        assert secret not in caplog.text
        assert all(secret not in str(e) for e in box.events)


async def test_a_session_that_ends_empty_is_discontinued_and_others_are_not_reported(
    tmp_path: Path, mpps_scp: MppsScp
) -> None:
    mpps_scp.start()
    async with running_box(tmp_path / "ledger.sqlite3", _settings(mpps_scp.port)) as box:
        typed_in = await box.session(SessionSource.MANUAL)
        await box.capture(typed_in, new_uid())
        await box.steps.first_capture(typed_in)
        await box.end(typed_in)
        empty = await box.session()
        await box.end(empty)
        await until(lambda: len(box.events) == 2, "N-CREATE and N-SET acknowledged")
        step = await box.step(empty)
        assert _statuses(mpps_scp, step.sop_instance_uid) == [
            ("N-CREATE", "IN PROGRESS"),
            ("N-SET", "DISCONTINUED"),
        ]
        final = mpps_scp.messages()[1].dataset
        assert final.PerformedSeriesSequence == []
        assert final.PerformedProcedureStepEndDate
        assert step.acknowledged is StepStatus.DISCONTINUED
        assert await box.call(mq.get_step, typed_in) is None  # unscheduled: no MPPS
        await box.end(empty)  # ending again sends nothing more
        await asyncio.sleep(0.5)
        assert len(mpps_scp.messages()) == 2


async def test_steps_wait_out_an_outage_and_go_in_order_when_the_ris_returns(
    tmp_path: Path, mpps_scp: MppsScp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.context.mpps")
    async with running_box(tmp_path / "ledger.sqlite3", _settings(mpps_scp.port)) as box:
        done = await box.session()
        spool_id, _ = await box.capture(done, new_uid())
        await box.steps.first_capture(done)
        empty = await box.session()
        await box.end(empty)
        await box.stored(spool_id)
        await box.end(done)
        await until(lambda: box.steps.reachable is False, "the outage to be seen")
        await asyncio.sleep(1.5)  # several retries while the RIS is down
        status = box.steps.status()
        assert status["queued"] == 2
        assert status["failed"] == 0
        assert status["last_error"]["code"] == StepErrorCode.UNREACHABLE
        step = await box.step(done)
        assert step.attempts >= 1
        assert step.error is not None
        assert not step.failed
        assert caplog.text.count("steps stay queued") == 1  # logged once, not per retry

        mpps_scp.start()
        await until(lambda: len(box.events) == 4, "every queued message acknowledged", 20)
        first, second = await box.step(done), await box.step(empty)
        assert [(r.sop_instance_uid, r.message) for r in mpps_scp.messages()] == [
            (first.sop_instance_uid, "N-CREATE"),
            (first.sop_instance_uid, "N-SET"),
            (second.sop_instance_uid, "N-CREATE"),
            (second.sop_instance_uid, "N-SET"),
        ]
        assert all(r.status == 0 for r in mpps_scp.messages())
        assert (first.acknowledged, second.acknowledged) == (
            StepStatus.COMPLETED,
            StepStatus.DISCONTINUED,
        )
        assert box.steps.status()["queued"] == 0
        assert box.steps.reachable is True
        assert "takes procedure steps again" in caplog.text


async def test_a_refused_step_is_recorded_and_not_retried(
    tmp_path: Path, mpps_scp: MppsScp
) -> None:
    mpps_scp.start()
    async with running_box(tmp_path / "ledger.sqlite3", _settings(mpps_scp.port)) as box:
        session = await box.session()
        spool_id, _ = await box.capture(session, new_uid())
        await box.steps.first_capture(session)
        await until(lambda: box.events, "the N-CREATE's acknowledgement")
        step = await box.step(session)
        # Someone at the RIS completed the step by hand: it may no longer be updated.
        mpps_scp.steps[step.sop_instance_uid].PerformedProcedureStepStatus = "COMPLETED"
        await box.stored(spool_id)
        await box.end(session)
        await until(lambda: len(mpps_scp.messages()) == 2, "the N-SET")
        await asyncio.sleep(1.5)
        assert [(r.message, r.status) for r in mpps_scp.messages()] == [
            ("N-CREATE", 0),
            ("N-SET", MAY_NO_LONGER_BE_UPDATED),
        ]
        refused = await box.step(session)
        assert refused.failed
        assert refused.error is not None
        assert (refused.error.code, refused.error.status) == (StepErrorCode.REFUSED, 0x0110)
        assert box.steps.status()["failed"] == 1
        assert box.steps.status()["queued"] == 0
        assert box.steps.reachable is True  # the RIS answered: the link is fine
        await until(lambda: len(box.events) == 2, "two events")
        assert box.events[1]["kind"] == ProcedureStepFailed.kind
        assert (box.events[1]["status"], box.events[1]["code"]) == ("COMPLETED", "refused")


async def test_orthanc_refuses_mpps_a_clear_error_and_no_crash(
    tmp_path: Path, orthanc: OrthancProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.context.mpps")
    settings = _settings(orthanc.dicom_port, ae_title=orthanc.aet)
    async with running_box(tmp_path / "ledger.sqlite3", settings) as box:
        session = await box.session()
        await box.capture(session, new_uid())
        await box.steps.first_capture(session)
        await until(lambda: box.steps.last_error is not None, "the refusal")
        await asyncio.sleep(1.5)  # retried with backoff, still running
        assert box.steps.status()["last_error"] == {
            "code": "not_accepted",
            "message": "the SCP does not accept Modality Performed Procedure Step "
            "(it is no MPPS SCP)",
        }
        assert box.steps.reachable is False
        step = await box.step(session)
        assert step.acknowledged is None
        assert not step.failed
        assert step.attempts >= 2
        assert step.error is not None
        assert step.error.code is StepErrorCode.NOT_ACCEPTED
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "accepts no Modality Performed Procedure Step context" in warnings[0].getMessage()


async def test_a_restart_resumes_from_the_ledger_without_a_second_n_create(
    tmp_path: Path, mpps_scp: MppsScp
) -> None:
    path = tmp_path / "ledger.sqlite3"
    mpps_scp.start()
    async with running_box(path, _settings(mpps_scp.port)) as box:
        session = await box.session()
        spool_id, _ = await box.capture(session, new_uid())
        await box.steps.first_capture(session)
        await until(lambda: mpps_scp.messages(), "the N-CREATE")
        await until(lambda: box.events, "the acknowledgement to be recorded")
        lost = await box.session()  # its N-CREATE's answer will be lost (see below)
        lost_capture, _ = await box.capture(lost, new_uid())
        await box.steps.first_capture(lost)
        await until(lambda: len(mpps_scp.messages()) == 2, "the second N-CREATE")
        await until(lambda: len(box.events) == 2, "its acknowledgement to be recorded")
    # The box stops; a crash lost the second acknowledgement before it was recorded.
    conn = db.open_ledger(path)
    conn.execute("UPDATE mpps SET acknowledged = NULL WHERE session_id = ?", (lost,))
    conn.close()
    async with running_box(path, _settings(mpps_scp.port), start=False) as box:
        await box.stored(spool_id)
        await box.stored(lost_capture)
        await box.end(session)
        await box.end(lost)
        mpps_scp_messages_before = len(mpps_scp.messages())
        worker = asyncio.create_task(box.steps.run(lambda: None))
        try:
            await until(lambda: len(box.events) == 3, "both N-SETs acknowledged")
        finally:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        first, second = await box.step(session), await box.step(lost)
    after = mpps_scp.messages()[mpps_scp_messages_before:]
    assert [(r.sop_instance_uid, r.message, r.status) for r in after] == [
        (first.sop_instance_uid, "N-SET", 0),
        (second.sop_instance_uid, "N-CREATE", 0x0111),  # the RIS has it: acknowledged
        (second.sop_instance_uid, "N-SET", 0),
    ]
    assert [r.message for r in mpps_scp.messages(first.sop_instance_uid)] == ["N-CREATE", "N-SET"]
    assert (first.acknowledged, second.acknowledged) == (StepStatus.COMPLETED,) * 2
