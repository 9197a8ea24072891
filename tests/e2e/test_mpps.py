"""MPPS: a worklist session's procedure step reaches the RIS with what the RIS needs,
and never COMPLETED before every instance is stored.

The stage runs in-process over a real ledger in tmp (tests/support/mpps_box.py) and
talks to a real pynetdicom MPPS SCP (tests/support/mpps_scp.py).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from gateway.core.context import SessionSource
from gateway.core.events import ProcedureStepFailed, ProcedureStepReported
from gateway.core.procedure_step import StepErrorCode, StepStatus
from gateway.core.uids import new_uid
from gateway.spool import mpps_queue as mq
from tests.support.mpps_box import (
    DERMOSCOPY,
    OBJ_MESH,
    SECRETS,
    mpps_settings,
    refs,
    running_box,
    statuses,
    until,
)
from tests.support.mpps_scp import MAY_NO_LONGER_BE_UPDATED, MppsScp


async def test_in_progress_at_the_first_capture_completed_only_once_everything_is_stored(
    tmp_path: Path, mpps_scp: MppsScp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    mpps_scp.start()
    async with running_box(tmp_path / "ledger.sqlite3", mpps_settings(mpps_scp.port)) as box:
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
        assert statuses(mpps_scp, step.sop_instance_uid) == [("N-CREATE", "IN PROGRESS")]
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
        assert refs(images, "ReferencedImageSequence") == [
            (DERMOSCOPY, first_uid),
            (DERMOSCOPY, second_uid),
        ]
        assert images.ReferencedNonImageCompositeSOPInstanceSequence == []
        assert images.SeriesDescription == "Dermoscopy L"
        assert images.ProtocolName == "Dermoscopy, left forearm"
        assert images.OperatorsName == "Nurse^Nina"
        meshes = series[mesh_series]
        assert meshes.ReferencedImageSequence == []
        assert refs(meshes, "ReferencedNonImageCompositeSOPInstanceSequence") == [
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
    async with running_box(tmp_path / "ledger.sqlite3", mpps_settings(mpps_scp.port)) as box:
        typed_in = await box.session(SessionSource.MANUAL)
        await box.capture(typed_in, new_uid())
        await box.steps.first_capture(typed_in)
        await box.end(typed_in)
        empty = await box.session()
        await box.end(empty)
        await until(lambda: len(box.events) == 2, "N-CREATE and N-SET acknowledged")
        step = await box.step(empty)
        assert statuses(mpps_scp, step.sop_instance_uid) == [
            ("N-CREATE", "IN PROGRESS"),
            ("N-SET", "DISCONTINUED"),
        ]
        final = mpps_scp.messages()[1].dataset
        assert final.PerformedSeriesSequence == []
        assert final.PerformedProcedureStepEndDate
        reason = final.PerformedProcedureStepDiscontinuationReasonCodeSequence[0]
        assert (reason.CodeValue, reason.CodingSchemeDesignator) == ("110513", "DCM")
        assert step.acknowledged is StepStatus.DISCONTINUED
        assert await box.call(mq.get_step, typed_in) is None  # unscheduled: no MPPS
        await box.end(empty)  # ending again sends nothing more
        await asyncio.sleep(0.5)
        assert len(mpps_scp.messages()) == 2


async def test_a_refused_step_is_recorded_and_not_retried(
    tmp_path: Path, mpps_scp: MppsScp
) -> None:
    mpps_scp.start()
    async with running_box(tmp_path / "ledger.sqlite3", mpps_settings(mpps_scp.port)) as box:
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


async def test_a_refused_n_create_is_recorded_and_its_end_is_not_sent(
    tmp_path: Path, mpps_scp: MppsScp
) -> None:
    mpps_scp.refuse_create = 0x0120  # missing attribute: the RIS wants something else
    mpps_scp.start()
    async with running_box(tmp_path / "ledger.sqlite3", mpps_settings(mpps_scp.port)) as box:
        session = await box.session()
        spool_id, _ = await box.capture(session, new_uid())
        await box.steps.first_capture(session)
        await until(lambda: box.events, "the refusal")
        await box.stored(spool_id)
        await box.end(session)
        await asyncio.sleep(1.0)
        assert [(r.message, r.status) for r in mpps_scp.messages()] == [("N-CREATE", 0x0120)]
        assert [(e["kind"], e["status"], e["code"]) for e in box.events] == [
            (ProcedureStepFailed.kind, "IN PROGRESS", "refused")
        ]
        step = await box.step(session)
        assert step.failed
        assert step.acknowledged is None
        assert box.steps.status()["failed"] == 1
