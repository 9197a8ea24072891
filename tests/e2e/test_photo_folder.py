"""Photo folder end to end: simulated camera → folder → ``dermgate run`` → real Orthanc.

The camera simulator writes real JPEG/PNG files with EXIF into a real folder; the
gateway runs as its own process; Orthanc stores what it receives. Checked: photos
arrive as VL Photographic exactly once (counted in Orthanc by SOP Instance UID),
JPEG image data unchanged in the fragment (its EXIF segment dropped), EXIF camera identity in the stored copy,
dciodvfy clean; defective files end in ``.refused/`` with a reason and are never
spooled; a half-copied file is never sent; a SIGKILLed gateway loses nothing and
duplicates nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pydicom
from PIL import Image
from pydicom.encaps import get_frame

from drivers.photo_folder import simulator as camera
from drivers.photo_folder.exif import read_exif
from gateway.demo.local_orthanc import OrthancProcess, free_port
from gateway.dicom.jpeg import strip_metadata
from gateway.dicom.modules import dt, in_zone_of
from tests.support.dciodvfy import dciodvfy_errors
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.photo_folder import photo_folder_toml, start_camera
from tests.support.state import ledger_rows, states
from tests.support.waiting import wait_for

VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _capture_id(data: bytes) -> str:
    return f"photo-{hashlib.sha256(data).hexdigest()[:32]}"


def _stored(orthanc: OrthancProcess, sop_instance_uid: str, tmp_path: Path) -> Path:
    found = orthanc.find_instances(sop_instance_uid)
    assert len(found) == 1, f"{sop_instance_uid} is in Orthanc {len(found)} times"
    path = tmp_path / f"{sop_instance_uid}.dcm"
    path.write_bytes(orthanc.instance_file(found[0]))
    return path


def test_photos_reach_orthanc_once_and_defective_files_are_refused(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    config = gateway_config(
        tmp_path,
        pacs_port=orthanc.dicom_port,
        commit_via=orthanc,
        devices=photo_folder_toml(folder, grace=1.0),
    )
    visit = folder / "Doe Jane visit"  # a folder dropped by mistake, named after a patient
    visit.mkdir()
    (visit / "IMG_9999.JPG").write_bytes(b"not looked at")
    gateway = gateway_factory(config)
    sim = start_camera(
        folder,
        tmp_path,
        *("--photos", "3", "--format", "jpeg", "--format", "png"),
        *("--fault", "corrupt", "--fault", "truncated", "--fault", "jpeg444"),
        *("--garbage", "--reoffer"),
    )
    try:
        assert sim.wait(150) == 0, sim.log() + gateway.log()
    finally:
        sim.stop()
    report = sim.report()
    assert sorted(report["acknowledged"]) == ["IMG_0001.JPG", "IMG_0002.PNG", "IMG_0003.JPG"]

    # Every defective entry is set aside with a plain reason, never spooled.
    refused = {item["id"]: item["reason"] for item in report["refused"]}
    assert set(refused) == {
        "BAD_0001_corrupt.JPG",
        "BAD_0002_truncated.JPG",
        "BAD_0003_jpeg444.JPG",
        "NOTES_0001.TXT",
    }
    assert "header is damaged" in refused["BAD_0001_corrupt.JPG"]
    assert "truncated" in refused["BAD_0002_truncated.JPG"]
    assert "4:4:4" in refused["BAD_0003_jpeg444.JPG"]
    assert "not a photo" in refused["NOTES_0001.TXT"]
    for name, reason in refused.items():
        assert name.split(".")[0] not in reason, "reasons never repeat the file name"
        assert (folder / ".refused" / f"{name}.reason.txt").is_file()
        assert not (folder / ".processed" / name).exists(), "a refused file was acknowledged"

    wait_for(lambda: (folder / ".refused" / visit.name).is_dir(), 30, "the folder refused")
    reason = (folder / ".refused" / f"{visit.name}.reason.txt").read_text(encoding="utf-8")
    assert "a folder, not a photo" in reason
    assert "Doe" not in reason

    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 3, 60, "3 photos COMMITTED")
    rows = {r["device_capture_id"]: r for r in ledger_rows(state_dir)}
    assert orthanc.count_instances() == 3, "the re-dropped photo made no second object"
    assert "Doe" not in gateway.log()
    log = gateway.log()
    assert "acknowledged again" in log
    # The re-dropped copy was acknowledged too (moved next to the first one).
    assert (folder / ".processed" / "IMG_0001.JPG.2").read_bytes() == (
        folder / ".processed" / "IMG_0001.JPG"
    ).read_bytes()
    assert [p.name for p in folder.iterdir() if not p.name.startswith(".")] == []

    for name in report["acknowledged"]:
        original = (folder / ".processed" / name).read_bytes()
        row = rows[_capture_id(original)]
        assert name not in row["device_capture_id"]
        assert name.split(".")[0] not in log, "file names (maybe patient names) are never logged"
        stored = _stored(orthanc, row["sop_instance_uid"], tmp_path)
        assert dciodvfy_errors(stored) == []
        ds = pydicom.dcmread(stored)
        assert ds.SOPClassUID == VL_PHOTOGRAPHIC
        assert ds.Modality == "XC"
        assert ds.Manufacturer == camera.MANUFACTURER
        assert ds.ManufacturerModelName == camera.MODEL
        assert ds.DeviceSerialNumber == "CP24-000000"
        assert ds.SoftwareVersions == camera.SOFTWARE, "the camera's firmware only"
        assert ds.ContributingEquipmentSequence[0].SoftwareVersions.startswith("DermGate ")
        assert ds.LensModel == camera.LENS_MODEL
        assert float(ds.FocalLength) == 35.0
        taken = read_exif(io.BytesIO(original)).taken_at()
        assert taken is not None
        box_now = datetime.now().astimezone()
        assert ds.AcquisitionDateTime == dt(in_zone_of(taken, box_now))
        if name == "IMG_0003.JPG":  # the simulator's third photo was taken sideways
            assert ds.ImageComments.startswith("Camera orientation: rotate 90 degrees clockwise")
        else:
            assert "ImageComments" not in ds
        assert ds.PatientName == "", "photos carry no patient name"
        assert ds.PatientID == f"TMP-test-box-01-{row['id']}", "each its temporary patient"
        if name.endswith(".JPG"):
            assert ds.file_meta.TransferSyntaxUID == JPEG_BASELINE
            fragment = get_frame(ds.PixelData, 0, number_of_frames=1)
            jpeg = strip_metadata(original)
            assert b"Exif" in original
            assert b"Exif" not in fragment, "EXIF is not carried"
            assert fragment[: len(jpeg)] == jpeg, "the image data is kept byte for byte"
            assert original.endswith(jpeg[jpeg.rindex(b"\xff\xda") :])
        else:
            assert ds.file_meta.TransferSyntaxUID == EXPLICIT_LE
            assert ds.PhotometricInterpretation == "RGB"
            pixels = Image.open(io.BytesIO(original)).convert("RGB").tobytes()
            assert ds.PixelData[: len(pixels)] == pixels, "PNG pixels carried losslessly"

    listing = json.dumps([dict(r) for r in rows.values()], default=str)
    for name in (*report["acknowledged"], *refused):
        assert name not in listing, "no file name in the ledger"
    assert gateway.stop() == 0


def test_half_copied_photo_is_never_sent_nor_refused(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    """The first photo sits half-written (no temp name) for longer than the settle
    time; the driver waits for the copy to finish instead of sending or refusing it."""
    folder = tmp_path / "photos"
    folder.mkdir()
    config = gateway_config(
        tmp_path,
        pacs_port=orthanc.dicom_port,
        commit_via=orthanc,
        devices=photo_folder_toml(folder, settle=0.3, grace=30.0),
    )
    gateway = gateway_factory(config)
    sim = start_camera(
        folder, tmp_path, "--photos", "2", "--unplug-mid-transfer", "--unplug-for", "2.5"
    )
    try:
        assert sim.wait(120) == 0, sim.log() + gateway.log()
    finally:
        sim.stop()
    assert "waiting up to 30 s for its copy to finish" in gateway.log()
    assert not (folder / ".refused").exists() or list((folder / ".refused").iterdir()) == []
    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 2, 60, "2 photos COMMITTED")
    whole = (folder / ".processed" / "IMG_0001.JPG").read_bytes()
    digests = {r["raw_sha256"] for r in ledger_rows(state_dir)}
    assert hashlib.sha256(whole).hexdigest() in digests, "the complete copy was sent"
    assert orthanc.count_instances() == 2, "the half copy never reached the PACS"
    assert gateway.stop() == 0


def test_gateway_killed_and_restarted_delivers_every_photo_exactly_once(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    config = gateway_config(
        tmp_path,
        pacs_port=orthanc.dicom_port,
        commit_via=orthanc,
        devices=photo_folder_toml(folder, settle=0.2, poll=0.1),
    )
    sim = start_camera(folder, tmp_path, "--photos", "5", "--interval", "0.1")
    state_dir = tmp_path / "state"
    first = gateway_factory(config)
    try:
        wait_for(lambda: len(ledger_rows(state_dir)) >= 1, 90, "a first durable photo")
        first.kill()  # often between the commit and the move into .processed
        second = gateway_factory(config)
        second.wait_running()
        wait_for(lambda: len(ledger_rows(state_dir)) >= 3, 90, "more durable photos")
        second.kill()
        final = gateway_factory(config)
        final.wait_running()
        assert sim.wait(150) == 0, sim.log() + final.log()
    finally:
        sim.stop()
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 5, 90, "5 photos COMMITTED")
    for row in ledger_rows(state_dir):
        assert len(orthanc.find_instances(row["sop_instance_uid"])) == 1
    assert orthanc.count_instances() == 5
    assert len(list((folder / ".processed").iterdir())) == 5
    assert final.stop() == 0


def _vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


def _large_jpeg(path: Path, size: int) -> bytes:
    """A describable JPEG of ``size`` bytes: a real header, long entropy data, EOI.

    Returns the hex SHA-256 (as bytes). The file is written in 1 MiB blocks to a
    dot-temp name and renamed into place, as a card copy does.
    """
    small = io.BytesIO()
    Image.effect_noise((64, 48), 30).convert("RGB").save(small, "JPEG", subsampling=2)
    data = small.getvalue()
    sos = data.index(b"\xff\xda")
    header_end = sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    header = data[:header_end]
    digest = hashlib.sha256()
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        fh.write(header)
        digest.update(header)
        remaining = size - len(header) - 2
        block = b"\x00" * (1 << 20)
        while remaining > 0:
            chunk = block[: min(len(block), remaining)]
            fh.write(chunk)
            digest.update(chunk)
            remaining -= len(chunk)
        fh.write(b"\xff\xd9")
        digest.update(b"\xff\xd9")
    tmp.rename(path)
    return digest.hexdigest().encode()


def test_large_photo_is_spooled_with_flat_memory(
    tmp_path: Path, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    """A 256 MiB photo goes into the spool without the gateway ever holding it whole
    (peak RSS grows by far less than the file). No PACS: only intake is measured."""
    folder = tmp_path / "photos"
    folder.mkdir()
    config = gateway_config(
        tmp_path,
        pacs_port=free_port(),
        devices=photo_folder_toml(folder, settle=0.2, poll=0.1),
    )
    gateway = gateway_factory(config)
    gateway.wait_running()
    assert gateway.proc is not None
    before = _vm_hwm_kib(gateway.proc.pid)
    size = 256 << 20
    digest = _large_jpeg(folder / "BIG.JPG", size).decode()
    wait_for(lambda: (folder / ".processed" / "BIG.JPG").exists(), 120, "the photo processed")
    rows = ledger_rows(tmp_path / "state")
    assert [r["raw_sha256"] for r in rows] == [digest]
    grown_mib = (_vm_hwm_kib(gateway.proc.pid) - before) / 1024
    assert grown_mib < 64, f"peak memory grew by {grown_mib:.0f} MiB for a 256 MiB photo"
    assert gateway.stop() == 0


def test_a_file_server_clock_off_by_an_hour_neither_delays_nor_rushes_photos(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    """The share's clock runs an hour ahead (every file time is in the box's future)
    or an hour behind (a copy in progress looks an hour old).

    Whether a file settled is timed by the box's own clock: the photo from the fast
    clock is delivered at once, and the copy in progress under the slow clock is not
    taken (and not refused as truncated) before it is complete.
    """
    folder = tmp_path / "photos"
    folder.mkdir()
    config = gateway_config(
        tmp_path,
        pacs_port=orthanc.dicom_port,
        commit_via=orthanc,
        devices=photo_folder_toml(folder, settle=1.5, poll=0.1, grace=30.0),
    )
    gateway = gateway_factory(config)
    gateway.wait_running()
    hour = 3600.0

    ahead = folder / "ahead.jpg"
    ahead.write_bytes(camera.make_photo(1, width=640, height=480))
    future = time.time() + hour
    os.utime(ahead, (future, future))
    wait_for(lambda: (folder / ".processed" / "ahead.jpg").exists(), 30, "the photo stamped ahead")

    behind = folder / "behind.jpg"
    whole = camera.make_photo(2, width=640, height=480)
    past = time.time() - hour
    with behind.open("wb") as fh:  # a copy that pauses between its chunks
        for start in range(0, len(whole), len(whole) // 4 + 1):
            fh.write(whole[start : start + len(whole) // 4 + 1])
            fh.flush()
            os.utime(behind, (past, past))
            time.sleep(0.6)  # longer than two polls, shorter than settle_seconds
            assert behind.exists(), "taken (or refused) while the copy was still running"
    wait_for(
        lambda: (folder / ".processed" / "behind.jpg").exists(), 30, "the photo stamped behind"
    )
    assert not list((folder / ".refused").iterdir())
    wait_for(lambda: states(tmp_path / "state") == ["COMMITTED"] * 2, 60, "both photos COMMITTED")
    digests = {
        hashlib.sha256(f.read_bytes()).hexdigest() for f in (folder / ".processed").iterdir()
    }
    assert hashlib.sha256(whole).hexdigest() in digests
    assert gateway.stop() == 0
