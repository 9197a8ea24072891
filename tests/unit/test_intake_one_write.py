"""One write per capture: a confocal stack or a 3D model is written once, as DICOM.

The real intake, ledger and wrapping stage on a real spool, fed as the usb-confocal
and scanner-export drivers feed them (the stack's depths come with the final offer).
Until issue 16 these captures were written twice: raw into ``raw/``, then again as
DICOM by the wrapping stage. Now the DICOM file is the only copy, and the bytes this
process writes per capture (``wchar`` of ``/proc/self/io``: every write, the ledger's
included) stay close to the file's size. A stack whose final description does not
fit what was begun is still kept, raw, and quarantined with the reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from gateway.core.capture import CaptureOffer, ContentType, InstanceUIDs
from gateway.core.routing import RoutePlan
from gateway.devices.contract import CaptureReceipt
from gateway.dicom.surface import ModelRole
from gateway.intake import Intake
from gateway.intake.stage import InlineWrap
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import Ledger
from gateway.wrap import Wrapper
from tests.support.confocal_iod import iod_errors
from tests.support.confocal_stacks import GATEWAY, IDENTITY, frames_of, make_stack
from tests.support.dciodvfy import dciodvfy_errors
from tests.support.surface_capture import IDENTITY as SCANNER
from tests.support.surface_capture import surface_links

CHUNK = 32 * 1024


@dataclasses.dataclass
class Spool:
    """The real intake and wrapping stage over one spool."""

    dirs: SpoolDirs
    ledger: Ledger
    intake: Intake
    wrapper: Wrapper

    def row(self, spool_id: int) -> dict[str, Any]:
        conn = sqlite3.connect(self.ledger.path)
        conn.row_factory = sqlite3.Row
        try:
            return dict(conn.execute("SELECT * FROM captures WHERE id = ?", (spool_id,)).fetchone())
        finally:
            conn.close()

    def files(self) -> dict[str, int]:
        """Every file in the spool's folders (relative name: size)."""
        root = self.dirs.raw.parent
        return {
            str(path.relative_to(root)): path.stat().st_size
            for path in root.rglob("*")
            if path.is_file() and "ledger" not in path.name
        }

    async def wrap_all(self) -> None:
        """Run the wrapping stage until no capture is CAPTURED."""
        task = asyncio.create_task(self.wrapper.run(lambda: None))
        try:
            for _ in range(400):
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
            with pytest.raises(asyncio.CancelledError):
                await task


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    dirs = SpoolDirs(tmp_path / "spool")
    dirs.create()
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.start()
    wrapper = Wrapper(ledger, dirs, GATEWAY, RoutePlan.of(("pacs",)), lambda: None)
    inline = InlineWrap(GATEWAY, wrapper.destinations, lambda: None)
    yield Spool(dirs, ledger, Intake(ledger, dirs, wrapper.notify, inline=inline), wrapper)
    ledger.close()


def written_bytes() -> int:
    """Bytes this process has passed to write(2) so far (all threads)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


async def deliver(
    spool: Spool, identity: Any, begun: CaptureOffer, data: bytes, final: CaptureOffer | None
) -> CaptureReceipt:
    sink = await spool.intake.begin("test", identity, begun)
    for start in range(0, len(data), CHUNK):
        await sink.write(data[start : start + CHUNK])
    return await sink.commit(length=len(data), sha256=hashlib.sha256(data).hexdigest(), offer=final)


def stack_offers(frames: int, depths: tuple[float, ...]) -> tuple[CaptureOffer, CaptureOffer]:
    """The offers of a 256 x 256 8-bit z-stack as the usb-confocal driver makes them:
    at the start without depths, at the end with them."""
    stack = make_stack(frames=frames, size=256)
    final = CaptureOffer(
        device_capture_id="S1",
        length=stack.pixel_bytes,
        content_type=ContentType.PIXELS,
        extra=dataclasses.replace(stack, depths_um=depths).to_extra(),
    )
    extra = dict(final.extra)
    del extra["depths_um_f64"]
    return dataclasses.replace(final, extra=extra), final


async def test_a_confocal_stack_is_written_once_as_its_dicom_file(spool: Spool) -> None:
    depths = tuple(2.5 * i for i in range(40))
    begun, final = stack_offers(40, depths)
    pixels = b"".join(frames_of(make_stack(frames=40, size=256)))
    before = written_bytes()
    receipt = await deliver(spool, IDENTITY, begun, pixels, final)
    await spool.wrap_all()
    written = written_bytes() - before

    row = spool.row(receipt.spool_id)
    assert row["state"] == "WRAPPED"
    assert row["raw_name"] == ""
    # The DICOM file is the only copy: nothing in raw/ or staging/.
    files = spool.files()
    assert list(files) == [f"dicom/{row['dicom_name']}"]
    size = files[f"dicom/{row['dicom_name']}"]
    assert size < len(pixels) * 1.05
    # Once, not twice (the ledger's own writes included).
    assert written < 1.2 * size, f"{written} bytes written for a {size}-byte file"

    path = spool.dirs.dicom / row["dicom_name"]
    ds = pydicom.dcmread(path)
    assert ds.PixelData == pixels
    assert ds.SOPInstanceUID == receipt.sop_instance_uid
    labels = [i.FrameContentSequence[0].FrameLabel for i in ds.PerFrameFunctionalGroupsSequence]
    assert labels[1] == "depth 2.5 um"
    assert labels[-1] == "depth 97.5 um"
    assert iod_errors(ds) == []
    # The ledger keeps the final description (depths), as a raw capture's would.
    assert "depths_um_f64" in row["offer_json"]


async def test_a_3d_model_is_written_once_as_its_dicom_file(spool: Spool) -> None:
    data = (b"solid body\n" + b"facet normal 0 0 1\n" * 60_000 + b"endsolid body\n")[:-1]
    uids = InstanceUIDs("2.25.71", "2.25.72", "2.25.73")
    offer = CaptureOffer(
        device_capture_id="mesh-1",
        length=len(data),
        content_type=ContentType.STL,
        extra=surface_links(ModelRole.MESH).to_extra(),
        uids=uids,
    )
    before = written_bytes()
    receipt = await deliver(spool, SCANNER, offer, data, None)
    await spool.wrap_all()
    written = written_bytes() - before

    row = spool.row(receipt.spool_id)
    assert row["state"] == "WRAPPED"
    assert list(spool.files()) == [f"dicom/{uids.sop_instance}.dcm"]
    path = spool.dirs.dicom / f"{uids.sop_instance}.dcm"
    assert written < 1.2 * path.stat().st_size
    ds = pydicom.dcmread(path)
    assert ds.EncapsulatedDocument[: len(data)] == data
    assert int(ds.EncapsulatedDocumentLength) == len(data)
    assert dciodvfy_errors(path) == []


async def test_a_stack_whose_final_description_is_wrong_is_kept_raw_and_quarantined(
    spool: Spool,
) -> None:
    begun, final = stack_offers(6, (1.0, 2.0, 3.0, 4.0, 5.0, 6.0))
    seven = dataclasses.replace(
        make_stack(frames=7, size=256), depths_um=tuple(range(7))
    ).to_extra()["depths_um_f64"]
    wrong = dataclasses.replace(final, extra={**final.extra, "depths_um_f64": seven})
    pixels = b"".join(frames_of(make_stack(frames=6, size=256)))
    receipt = await deliver(spool, IDENTITY, begun, pixels, wrong)
    await spool.wrap_all()

    row = spool.row(receipt.spool_id)
    assert row["state"] == "QUARANTINED"
    assert "7 frame depths for 6 frames" in row["reason"]
    assert (spool.dirs.raw / row["raw_name"]).read_bytes() == pixels
    assert list(spool.files()) == [f"raw/{row['raw_name']}"]
