"""Patient ID is never empty: a capture without a known patient gets a temporary one.

Until worklists and patient sessions exist, an object whose device named no patient
gets Patient ID ``TMP-<gateway id>-<spool id>`` with Issuer of Patient ID
``<gateway id>-TEMP`` and an empty Patient's Name, so a PACS files every such
capture under its own patient instead of one blank patient holding everybody's
images. The spool id is the capture's ledger row, so the technician can find it
(``dermgate spool show ID``) and the ID is the same on every retry and re-wrap.
A device-supplied Patient ID gets the Issuer of Patient ID the device sent, or the
device's configured ``issuer_of_patient_id``.

The intake and wrapping stage are the real ones, on a real spool and ledger; every
object is checked by dciodvfy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pydicom
import pytest
from PIL import Image

from gateway.core.capture import (
    CaptureOffer,
    ContentType,
    DeviceClass,
    DeviceIdentity,
    GatewayIdentity,
    PatientContext,
)
from gateway.devices.contract import CaptureReceipt
from gateway.dicom.confocal import ConfocalStack
from gateway.intake import InlineWrap, Intake
from gateway.service.config import load_config
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import Ledger
from gateway.wrap import Wrapper
from tests.support.dciodvfy import dciodvfy_errors

GATEWAY = GatewayIdentity(gateway_id="derm-box-07", software_version="0.1.0")
SCOPE = DeviceIdentity("DermGate Reference Devices", "DS-100", "DS100-1", ("2.4.1",))
CONFOCAL = DeviceIdentity(
    "DermGate Reference Devices",
    "RCM-1",
    "RCM1-1",
    ("3.1",),
    device_class=DeviceClass.CONFOCAL_MICROSCOPE,
)


def jpeg(seed: int) -> bytes:
    """A small 4:2:0 JPEG, the same for the same seed."""
    noise = random.Random(seed).randbytes(96 * 64 * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (96, 64), noise).save(out, "JPEG", subsampling=2)
    return out.getvalue()


class Spool:
    """The real intake and wrapping stage on a fresh spool, as the service wires them."""

    def __init__(self, root: Path) -> None:
        self.dirs = SpoolDirs(root / "spool")
        self.dirs.create()
        self.ledger = Ledger(root / "ledger.sqlite3")
        self.ledger.start()
        self.wrapper = Wrapper(self.ledger, self.dirs, GATEWAY, ("pacs",), lambda: None)
        inline = InlineWrap(GATEWAY, self.wrapper.destinations, lambda: None)
        self.intake = Intake(self.ledger, self.dirs, self.wrapper.notify, None, inline)

    async def capture(
        self, identity: DeviceIdentity, offer: CaptureOffer, data: bytes, **begin: str
    ) -> CaptureReceipt:
        sink = await self.intake.begin("test-driver", identity, offer, **begin)
        for start in range(0, len(data), 4096):
            await sink.write(data[start : start + 4096])
        return await sink.commit(length=len(data), sha256=hashlib.sha256(data).hexdigest())

    def dicom(self, receipt: CaptureReceipt) -> pydicom.Dataset:
        return pydicom.dcmread(self.dirs.dicom / f"{receipt.sop_instance_uid}.dcm")

    async def wrap_all(self) -> None:
        """Run the wrapping stage until every CAPTURED capture is WRAPPED."""
        task = asyncio.create_task(self.wrapper.run(lambda: None))
        try:
            for _ in range(200):
                conn = sqlite3.connect(self.ledger.path)
                try:
                    left = conn.execute(
                        "SELECT count(*) FROM captures WHERE state = 'CAPTURED'"
                    ).fetchone()[0]
                finally:
                    conn.close()
                if not left:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("the wrapping stage did not wrap the captures")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    spool = Spool(tmp_path)
    yield spool
    spool.ledger.close()


def temporary(ds: pydicom.Dataset, spool_id: int) -> None:
    assert ds.PatientID == f"TMP-derm-box-07-{spool_id}"
    assert ds.IssuerOfPatientID == "derm-box-07-TEMP"
    assert ds.PatientName == ""


async def test_each_capture_without_patient_gets_its_own_temporary_patient(
    spool: Spool,
) -> None:
    first = await spool.capture(SCOPE, CaptureOffer("c1", length=len(jpeg(1))), jpeg(1))
    second = await spool.capture(SCOPE, CaptureOffer("c2", length=len(jpeg(2))), jpeg(2))
    assert first.spool_id != second.spool_id
    for receipt in (first, second):
        ds = spool.dicom(receipt)  # written straight into DICOM at intake
        assert dciodvfy_errors(spool.dirs.dicom / f"{receipt.sop_instance_uid}.dcm") == []
        temporary(ds, receipt.spool_id)


async def test_wrapping_stage_and_rewrap_give_the_same_temporary_patient(
    spool: Spool, tmp_path: Path
) -> None:
    """A JPEG of unknown size and a 16-bit confocal stack go through ``raw/``; wrapped
    again (a technician's retry), each object names the same patient. An 8-bit stack,
    written straight into DICOM at intake, names its own temporary patient too."""
    data = jpeg(3)
    photo = await spool.capture(SCOPE, CaptureOffer("c3"), data)  # no length: raw first
    stacks = {
        bits: ConfocalStack(
            kind="z-stack",
            frames=2,
            rows=16,
            columns=16,
            bits=bits,
            pixel_spacing_um=1.0,
            wavelength_nm=830,
            depths_um=(0.0, 4.0),
        )
        for bits in (8, 16)
    }
    receipts = {}
    for bits, stack in stacks.items():
        pixels = random.Random(1).randbytes(stack.pixel_bytes)
        offer = CaptureOffer(
            f"s{bits}",
            length=len(pixels),
            content_type=ContentType.PIXELS,
            extra=stack.to_extra(),
            lesion_id="L3",
        )
        receipts[bits] = await spool.capture(CONFOCAL, offer, pixels)
    temporary(spool.dicom(receipts[8]), receipts[8].spool_id)  # already DICOM
    confocal = receipts[16]
    await spool.wrap_all()
    for receipt in (photo, confocal):
        path = spool.dirs.dicom / f"{receipt.sop_instance_uid}.dcm"
        if receipt is photo:
            assert dciodvfy_errors(path) == []
        temporary(pydicom.dcmread(path), receipt.spool_id)
        first = path.read_bytes()
        path.unlink()
        conn = sqlite3.connect(spool.ledger.path)
        with conn:
            conn.execute("UPDATE captures SET state = 'CAPTURED' WHERE id = ?", (receipt.spool_id,))
        conn.close()
        await spool.wrap_all()
        again = pydicom.dcmread(path)
        temporary(again, receipt.spool_id)
        assert pydicom.dcmread(io.BytesIO(first)).PatientID == again.PatientID


async def test_device_patient_gets_the_configured_issuer(spool: Spool) -> None:
    data = jpeg(4)
    named = PatientContext(patient_name="Roe^Jane", patient_id="MRN-77")
    receipt = await spool.capture(
        SCOPE,
        CaptureOffer("c4", length=len(data), patient=named),
        data,
        issuer_of_patient_id="HOSP-A",
    )
    ds = spool.dicom(receipt)
    assert (ds.PatientID, ds.IssuerOfPatientID, ds.PatientName) == ("MRN-77", "HOSP-A", "Roe^Jane")

    own = PatientContext(patient_id="MRN-78", issuer_of_patient_id="DEVICE-ISSUER")
    receipt = await spool.capture(
        SCOPE,
        CaptureOffer("c5", length=len(data), patient=own),
        data,
        issuer_of_patient_id="HOSP-A",
    )
    ds = spool.dicom(receipt)
    assert (ds.PatientID, ds.IssuerOfPatientID) == ("MRN-78", "DEVICE-ISSUER")


def test_issuer_of_patient_id_is_a_device_key(tmp_path: Path) -> None:
    config = tmp_path / "dermgate.toml"
    base = f"""
[gateway]
id = "derm-box-07"
state_dir = "{tmp_path / "state"}"

[[destinations]]
name = "pacs"
kind = "dicom"
ae_title = "PACS"
host = "127.0.0.1"
port = 104

[[devices]]
driver = "serial-dermatoscope"
port = "/dev/ttyACM0"
"""
    config.write_text(base + 'issuer_of_patient_id = "HOSP-A"\n', encoding="utf-8")
    loaded = load_config(config)
    device = loaded.devices[0]
    assert device.issuer_of_patient_id == "HOSP-A"
    assert "issuer_of_patient_id" not in device.options(), "not a driver option"
    config.write_text(base + 'issuer_of_patient_id = "A\\\\B"\n', encoding="utf-8")
    with pytest.raises(Exception, match="issuer_of_patient_id"):
        load_config(config)


def test_long_gateway_ids_still_fit_patient_id_and_issuer() -> None:
    from gateway.core.patient import temporary_patient

    long_id = "x" * 64
    patient = temporary_patient(long_id, 2**63 - 1)
    assert len(patient.patient_id) <= 64
    assert len(patient.issuer_of_patient_id) <= 64
    assert patient.patient_id.startswith("TMP-x")
    assert patient.issuer_of_patient_id.endswith("-TEMP")
    assert temporary_patient(long_id, 1).issuer_of_patient_id == patient.issuer_of_patient_id
    assert temporary_patient("y" * 64, 1).issuer_of_patient_id != patient.issuer_of_patient_id
