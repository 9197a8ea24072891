"""The MPPS stage in-process over a real ledger in tmp, and how tests feed it.

Sessions are rows of the ``sessions`` table written with plain SQL of schema v6 (the
sessions module is another branch's); captures are recorded, bound and delivered
with the spool's own functions (``insert_capture``, ``record_sent``). The stage
runs with short retries; what it publishes on its bus is collected in ``events``.
"""

from __future__ import annotations

import asyncio
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
from gateway.core.events import EventBus
from gateway.core.uids import new_uid
from gateway.spool import ledger as db
from gateway.spool import mpps_queue as mq
from gateway.spool.ledger import Ledger
from gateway.spool.records import patient_to_json
from tests.support.dicom_files import DEVICE
from tests.support.mpps_scp import MppsScp

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


def mpps_settings(port: int, ae_title: str = "RIS") -> WorklistSettings:
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


def statuses(scp: MppsScp, uid: str) -> list[tuple[str, str]]:
    return [(r.message, str(r.dataset.PerformedProcedureStepStatus)) for r in scp.messages(uid)]


def refs(item: Dataset, keyword: str) -> list[tuple[str, str]]:
    return [
        (str(r.ReferencedSOPClassUID), str(r.ReferencedSOPInstanceUID)) for r in item[keyword].value
    ]
