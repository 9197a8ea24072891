"""MPPS across outages: steps queue while the RIS is away (or is an Orthanc, which
refuses MPPS) and go in order when it is back; a restart resumes from the ledger
without a second N-CREATE.

The stage runs in-process over a real ledger in tmp (tests/support/mpps_box.py) and
talks to a real pynetdicom MPPS SCP (tests/support/mpps_scp.py) or a real Orthanc.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from gateway.core.procedure_step import StepErrorCode, StepStatus
from gateway.core.uids import new_uid
from gateway.demo.local_orthanc import OrthancProcess
from gateway.spool import ledger as db
from tests.support.mpps_box import mpps_settings, running_box, until
from tests.support.mpps_scp import MppsScp


async def test_steps_wait_out_an_outage_and_go_in_order_when_the_ris_returns(
    tmp_path: Path, mpps_scp: MppsScp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.context.mpps")
    async with running_box(tmp_path / "ledger.sqlite3", mpps_settings(mpps_scp.port)) as box:
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


async def test_orthanc_refuses_mpps_a_clear_error_and_no_crash(
    tmp_path: Path, orthanc: OrthancProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.context.mpps")
    settings = mpps_settings(orthanc.dicom_port, ae_title=orthanc.aet)
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
    async with running_box(path, mpps_settings(mpps_scp.port)) as box:
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
    async with running_box(path, mpps_settings(mpps_scp.port), start=False) as box:
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
