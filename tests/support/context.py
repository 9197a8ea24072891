"""The context stage wired to the real intake and wrapping stage on a fresh spool.

:class:`ContextRig` builds what :mod:`gateway.service.app` builds for patient
sessions (ledger, intake with the stage as its binder, wrapper, event bus) from a
real configuration file, so tests open sessions through the real
:class:`~gateway.context.stage.ContextStage` and capture through the real intake.
Worklist items are put into the ledger's cache as a refresh would
(:func:`gateway.spool.worklist_cache.replace_items`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import random
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pydicom
from PIL import Image

from gateway.context.desk import Actor, ProcedureStepHooks
from gateway.context.stage import ContextStage
from gateway.context.worklist_source import WorklistSource
from gateway.core.capture import (
    CaptureOffer,
    DeviceClass,
    DeviceIdentity,
    GatewayIdentity,
    PatientContext,
)
from gateway.core.context import Coded, WorklistEntry
from gateway.core.events import EventBus, Subscription
from gateway.core.routing import RoutePlan
from gateway.devices.contract import CaptureReceipt
from gateway.intake import InlineWrap, Intake
from gateway.service.config import parse_config
from gateway.spool import worklist_cache
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import Ledger
from gateway.wrap import Wrapper

__all__ = [
    "CAMERA",
    "GATEWAY_ID",
    "SCOPE",
    "TECH",
    "ContextRig",
    "context_rig",
    "item",
    "jpeg",
]

GATEWAY_ID = "ctx-box-01"
SCOPE = DeviceIdentity("DermGate Reference Devices", "DS-100", "DS100-1", ("2.4.1",))
CAMERA = DeviceIdentity(
    "DermGate Reference Devices", "CAM-1", "CAM1-1", ("1.0",), device_class=DeviceClass.CAMERA
)
TECH = Actor("user", "tech", operator_name="Nurse^Anna")


def jpeg(seed: int) -> bytes:
    """A small 4:2:0 JPEG, the same for the same seed."""
    noise = random.Random(seed).randbytes(96 * 64 * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (96, 64), noise).save(out, "JPEG", subsampling=2)
    return out.getvalue()


def item(
    n: int,
    *,
    patient_id: str,
    name: str,
    accession: str,
    study_uid: str,
    birth_date: str = "19700101",
    sex: str = "F",
    issuer: str = "HOSP-MRN",
    procedure: str = "Dermoscopy of pigmented lesions",
) -> WorklistEntry:
    """A worklist item (one scheduled procedure step) as the worklist client stores it."""
    return WorklistEntry(
        key=f"{study_uid}|SPS{n}",
        patient=PatientContext(
            patient_name=name,
            patient_id=patient_id,
            issuer_of_patient_id=issuer,
            birth_date=birth_date,
            sex=sex,
        ),
        study_uid=study_uid,
        accession_number=accession,
        referring_physician="Referrer^Rita",
        requested_procedure_id=f"RP{n}",
        requested_procedure_description=procedure,
        requested_procedure_codes=(Coded("DERM01", "99HOSP", procedure),),
        sps_id=f"SPS{n}",
        sps_description="Dermoscopy",
        sps_start_date="20261206",
        sps_start_time="0900",
        modality="XC",
        station_ae_title="DERMGATE",
        fetched_at=time.time(),
    )


class ContextRig:
    """Real ledger, intake, wrapper and context stage over one spool (see module doc)."""

    def __init__(
        self,
        root: Path,
        *,
        hold: int = 0,
        extra: str = "",
        steps: ProcedureStepHooks | None = None,
    ) -> None:
        text = f"""
[gateway]
id = "{GATEWAY_ID}"
state_dir = "{root / "state"}"

[context]
hold_unidentified = {hold}
issuer_of_patient_id = "HOSP-MRN"
{extra}

[[destinations]]
name = "pacs"
kind = "dicom"
ae_title = "PACS"
host = "127.0.0.1"
port = 104

[[devices]]
driver = "serial-dermatoscope"
name = "scope"
port = "/dev/ttyDERM-A"

[[devices]]
driver = "serial-dermatoscope"
name = "camera"
port = "/dev/ttyDERM-B"
"""
        path = root / "dermgate.toml"
        path.write_text(text, encoding="utf-8")
        self.config = parse_config(text, path)
        self.dirs = SpoolDirs(self.config.spool_dir())
        self.dirs.create()
        self.ledger = Ledger(self.config.ledger_path())
        self.ledger.start()
        self.bus = EventBus()
        self.bus.bind(asyncio.get_running_loop())
        self.events: Subscription = self.bus.subscribe()
        gateway = GatewayIdentity(gateway_id=GATEWAY_ID, software_version="0.1.0")
        plan = RoutePlan.from_config(self.config)  # every destination, unless routes in extra
        self.wrapper = Wrapper(self.ledger, self.dirs, gateway, plan, lambda: None, self.bus)
        inline = InlineWrap(gateway, self.wrapper.destinations, lambda: None)

        async def reserve() -> int:
            return await self.intake.reserve_spool_id()

        # With a [worklist] section, the stage gets the worklist source, as in the service.
        self.worklist = (
            None
            if self.config.worklist is None
            else WorklistSource(self.ledger, self.config.worklist, "DERMGATE", self.bus)
        )
        self.stage = ContextStage(
            self.ledger, self.config, GATEWAY_ID, self.bus, self.wrapper.notify, reserve, steps,
            self.worklist,
        )  # fmt: skip
        self.intake = Intake(
            self.ledger, self.dirs, self.wrapper.notify, None, inline, bus=self.bus,
            binder=self.stage,
        )  # fmt: skip

    def set_worklist(self, items: list[WorklistEntry], *, age: float = 0.0) -> None:
        """The worklist cache holds ``items`` (as after a successful refresh ``age``
        seconds ago)."""
        conn = sqlite3.connect(self.ledger.path, isolation_level=None)
        try:
            worklist_cache.replace_items(conn, items, source_ae="RIS", now=time.time() - age)
        finally:
            conn.close()

    async def capture(
        self,
        device: str,
        identity: DeviceIdentity,
        offer: CaptureOffer,
        data: bytes,
    ) -> CaptureReceipt:
        """One capture from configured device ``device``, through the real intake."""
        host = self.intake.host_for("serial-dermatoscope", device)
        sink = await host.begin_capture(identity, offer)
        for start in range(0, len(data), 4096):
            await sink.write(data[start : start + 4096])
        return await sink.commit(length=len(data), sha256=hashlib.sha256(data).hexdigest())

    def row(self, spool_id: int) -> dict[str, Any]:
        """The ledger row of a capture (read on a connection of our own)."""
        conn = sqlite3.connect(self.ledger.path)
        conn.row_factory = sqlite3.Row
        try:
            row = conn.execute("SELECT * FROM captures WHERE id = ?", (spool_id,)).fetchone()
        finally:
            conn.close()
        assert row is not None, f"no capture {spool_id}"
        return dict(row)

    def dicom(self, spool_id: int) -> pydicom.Dataset:
        """The DICOM file of a wrapped capture."""
        name = self.row(spool_id)["dicom_name"]
        assert name, f"spool id {spool_id} has no DICOM file"
        return pydicom.dcmread(self.dirs.dicom / name)

    async def wrap_all(self) -> None:
        """Run the wrapping stage until no capture is CAPTURED."""
        task = asyncio.create_task(self.wrapper.run(lambda: None))
        try:
            for _ in range(300):
                conn = sqlite3.connect(self.ledger.path)
                try:
                    (left,) = conn.execute(
                        "SELECT count(*) FROM captures WHERE state = 'CAPTURED'"
                    ).fetchone()
                finally:
                    conn.close()
                if left == 0:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("captures still CAPTURED")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def kinds(self) -> list[str]:
        """The kinds of the events published so far (drained)."""
        kinds = []
        while len(self.events):
            seq, event = self.events.peek()
            self.events.pop(seq)
            kinds.append(str(event["kind"]))
        return kinds

    def close(self) -> None:
        """Close the ledger."""
        self.ledger.close()


async def context_rig(root: Path, **kwargs: Any) -> AsyncIterator[ContextRig]:
    """A :class:`ContextRig`, closed afterwards (wrap in a pytest fixture)."""
    rig = ContextRig(root, **kwargs)
    try:
        yield rig
    finally:
        rig.close()
