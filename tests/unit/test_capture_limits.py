"""A size a device announces is a claim to check against limits, in process: the
intake refuses an announced or streamed size over ``max_capture_mb`` before or while
staging it, and the folder drivers' intakes set such an entry aside for good. The
real simulators against ``dermgate run`` are in ``tests/e2e/test_capture_limits.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from drivers.photo_folder import simulator as camera
from drivers.photo_folder.driver import PhotoFolderDriver, PhotoFolderOptions
from drivers.scanner_export.driver import ScannerExportDriver, ScannerExportOptions
from gateway.core.capture import CaptureOffer, ContentType, DeviceClass, DeviceIdentity
from gateway.devices.contract import CaptureRefused, DriverState, RefusalReason
from gateway.devices.host import DriverHost
from gateway.intake import Intake
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import Ledger
from tests.support.scanner_export import OBJ_TEXT, textured_files, write_export
from tests.support.state import ledger_rows

MIB = 1024 * 1024


@pytest.fixture
async def intake(tmp_path: Path) -> AsyncIterator[Intake]:
    """The real intake on a fresh spool, with a 1 MiB capture limit."""
    dirs = SpoolDirs(tmp_path / "spool")
    dirs.create()
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.start()
    yield Intake(ledger, dirs, lambda: None, max_capture_bytes=MIB)
    ledger.close()


CAMERA = DeviceIdentity("Acme", "Cam 1", "CAM-1", ("1.0",), DeviceClass.CAMERA)


def staged(intake: Intake) -> list[Path]:
    """Files left in the staging folder."""
    return list(intake.dirs.staging.iterdir())


async def test_an_announced_size_over_the_limit_is_refused_before_anything_is_staged(
    intake: Intake,
) -> None:
    offer = CaptureOffer("big", length=MIB + 1, content_type=ContentType.TIFF)
    with pytest.raises(CaptureRefused) as caught:
        await intake.begin("photo-folder", CAMERA, offer)
    assert caught.value.reason is RefusalReason.TOO_LARGE
    assert "max_capture_mb" in caught.value.detail
    assert staged(intake) == []
    exact = CaptureOffer("exact", length=MIB, content_type=ContentType.TIFF)
    sink = await intake.begin("photo-folder", CAMERA, exact)
    await sink.abort("test")


@pytest.mark.parametrize("announced", [None, 1000], ids=["unannounced", "understated"])
async def test_bytes_streamed_beyond_the_limit_are_refused_and_discarded(
    intake: Intake, announced: int | None
) -> None:
    offer = CaptureOffer("stream", length=announced, content_type=ContentType.TIFF)
    sink = await intake.begin("photo-folder", CAMERA, offer)
    chunk = b"\x00" * (256 * 1024)
    for _ in range(4):  # exactly the limit: accepted so far
        await sink.write(chunk)
    with pytest.raises(CaptureRefused) as caught:
        await sink.write(b"\x00")
    assert caught.value.reason is RefusalReason.TOO_LARGE
    assert staged(intake) == [], "the staging file is gone"
    assert ledger_rows(intake.ledger.path.parent) == []
    # A capture within the limit goes through afterwards.
    data = chunk * 4
    sink = await intake.begin("photo-folder", CAMERA, CaptureOffer("fits", length=len(data)))
    await sink.write(data)
    receipt = await sink.commit(length=len(data), sha256=hashlib.sha256(data).hexdigest())
    assert not receipt.duplicate


async def _until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)
    assert predicate(), what


async def test_a_photo_intake_refuses_as_too_large_is_set_aside_not_retried(
    intake: Intake, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The driver's own size check needs the host to announce the limit; without it
    intake refuses the offer (TOO_LARGE) and that refusal is just as final."""
    folder = tmp_path / "photos"
    folder.mkdir()
    # The host's default limit (4096 MiB) is not intake's: the driver cannot check first.
    host = DriverHost("camera", functools.partial(intake.begin, "photo-folder"))
    options = PhotoFolderOptions(folder=folder, settle_seconds=0.1, poll_interval=0.05)
    (folder / "IMG_0001.JPG").write_bytes(camera.make_photo(1, width=3800, height=2500))
    (folder / "IMG_0002.JPG").write_bytes(camera.make_photo(2, width=640, height=480))
    task = asyncio.create_task(PhotoFolderDriver(options, host, "camera").run())
    try:
        await _until((folder / ".processed" / "IMG_0002.JPG").exists, "the small photo")
        await _until((folder / ".refused" / "IMG_0001.JPG").exists, "the large photo")
        await asyncio.sleep(0.5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    reason = (folder / ".refused" / "IMG_0001.JPG.reason.txt").read_text(encoding="utf-8")
    assert "the limit is 1 MiB ([spool] max_capture_mb)" in reason
    assert host.state is DriverState.READY
    assert len([r for r in caplog.records if "max_capture_mb" in r.getMessage()]) == 1
    assert len(ledger_rows(intake.ledger.path.parent)) == 1


async def test_an_export_intake_refuses_as_too_large_is_refused_whole(
    intake: Intake, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused as a whole, not retried. (The files offered before the mesh are in the
    spool by then: only the driver's own check before capturing, which the gateway's
    host makes possible, keeps such an export out entirely; see above.)"""
    folder = tmp_path / "exports"
    folder.mkdir()
    host = DriverHost("scanner", functools.partial(intake.begin, "scanner-export"))
    options = ScannerExportOptions(folder=folder, settle_seconds=0.1, poll_interval=0.05)
    padding = b"# " + b"x" * 61 + b"\n"
    mesh = OBJ_TEXT + padding * (2 * MIB // len(padding) + 1)
    write_export(folder, "export-1", {**textured_files(1), "body.obj": mesh}, patient={"id": "P1"})
    task = asyncio.create_task(ScannerExportDriver(options, host, "scanner").run())
    try:
        await _until((folder / ".refused" / "export-1").exists, "the export refused")
        await asyncio.sleep(0.5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    reason = (folder / ".refused" / "export-1.reason.txt").read_text(encoding="utf-8")
    assert "the limit is 1 MiB ([spool] max_capture_mb)" in reason
    assert host.state is DriverState.READY
    assert len([r for r in caplog.records if "max_capture_mb" in r.getMessage()]) == 1
