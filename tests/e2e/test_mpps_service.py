"""MPPS in the service: ``[worklist] mpps = true`` starts the reporting stage, which
sends what the ledger has queued (a restart resumes) and shows its counts.

The sessions and their queued steps are written into the ledger before ``dermgate
run`` starts (plain SQL of schema v6 and the queue's own functions), as a previous
run that stopped with steps unsent would have left them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from gateway.core.capture import PatientContext
from gateway.core.context import OrderContext, RequestedProcedure, SessionSource
from gateway.core.uids import new_uid
from gateway.demo.local_orthanc import free_port
from gateway.spool import ledger as db
from gateway.spool import mpps_queue as mq
from gateway.spool.records import patient_to_json
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.mpps_scp import MppsScp
from tests.support.waiting import wait_for

PATIENT = PatientContext(patient_name="Roe^Rita", patient_id="MRN-5511", sex="F")


def _session(conn: sqlite3.Connection, device: str, *, closed: bool) -> int:
    study = new_uid()
    order = OrderContext(
        accession_number="ACC-5511",
        request=RequestedProcedure(study_uid=study, sps_id="SPS-1", accession_number="ACC-5511"),
    )
    now = db.utc_now_text()
    cur = conn.execute(
        "INSERT INTO sessions (device, source, patient_json, order_json, worklist_key, "
        "study_uid, opened_at, opened_by, closed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            device,
            SessionSource.WORKLIST,
            patient_to_json(PATIENT),
            mq.ORDER_RECORD.dump_json(order).decode(),
            "item-1",
            study,
            now,
            "user:tech",
            now if closed else None,
        ),
    )
    assert cur.lastrowid is not None
    return cur.lastrowid


def test_the_service_sends_the_steps_a_previous_run_left_queued(
    tmp_path: Path, mpps_scp: MppsScp, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    mpps_scp.start()
    config = gateway_config(tmp_path, pacs_port=free_port(), devices="")
    config.write_text(
        config.read_text(encoding="utf-8")
        + f"""
[worklist]
ae_title = "WORKLIST"
host = "127.0.0.1"
port = {free_port()}
mpps = true
mpps_ae_title = "{mpps_scp.ae_title}"
mpps_port = {mpps_scp.port}
""",
        encoding="utf-8",
    )
    conn = db.open_ledger(tmp_path / "state" / "ledger.sqlite3")
    started = _session(conn, "scope", closed=False)
    mq.queue_start(conn, started, new_uid(), db.utc_now_text(), time.time())
    empty = _session(conn, "camera", closed=True)
    assert mq.queue_end(conn, empty, new_uid(), time.time()) == "DISCONTINUED"
    steps = {s: mq.get_step(conn, s) for s in (started, empty)}
    uids = {s: step.sop_instance_uid for s, step in steps.items() if step is not None}
    conn.close()

    gateway = gateway_factory(config)
    gateway.wait_running()
    wait_for(lambda: len(mpps_scp.messages()) == 3, 30, "the queued messages")
    assert [(r.sop_instance_uid, r.message, r.status) for r in mpps_scp.messages()] == [
        (uids[started], "N-CREATE", 0),
        (uids[empty], "N-CREATE", 0),
        (uids[empty], "N-SET", 0),
    ]
    assert all(r.calling_ae == "DERMGATE" for r in mpps_scp.messages())
    assert mpps_scp.messages()[2].dataset.PerformedProcedureStepStatus == "DISCONTINUED"
    assert gateway.stop() == 0
    log = gateway.log()
    assert "reporting procedure steps to RIS@127.0.0.1" in log
    for secret in ("Roe", "Rita", "MRN-5511", "ACC-5511"):
        assert secret not in log
