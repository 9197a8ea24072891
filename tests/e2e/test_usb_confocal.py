"""End to end: RCM-1 simulator (own process) → emulated USB → ``dermgate run`` → Orthanc.

The simulator serves the device at the USB transfer level over a Unix socket;
the gateway's driver finds it with ``usb.core.find`` through the emulated pyusb
backend. Stacks must arrive in a real Orthanc as the right SOP class, exactly once
(counted by SOP Instance UID), with the pixels the device sent (SHA-256 of the
stored Pixel Data against the device's own report), across garbage on the wire,
re-offers of acknowledged stacks, an unplug mid-transfer and a gateway killed
mid-stack and restarted. 16-bit stacks, which the Confocal Microscopy IODs cannot
hold, arrive as Multi-frame Grayscale Word Secondary Capture.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from gateway.demo.local_orthanc import OrthancProcess
from tests.support.confocal_iod import iod_errors
from tests.support.dciodvfy import dciodvfy_errors
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.slide_viewer import stitched, total_pixel_matrix
from tests.support.state import ledger_rows, states
from tests.support.usb_confocal import ConfocalSimulator, confocal_config
from tests.support.waiting import wait_for

Z_STACK = "1.2.840.10008.5.1.4.1.1.77.1.8"
TILED = "1.2.840.10008.5.1.4.1.1.77.1.9"
WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"


def check_in_orthanc(
    tmp_path: Path, orthanc: OrthancProcess, report: dict[str, Any], sop_class: str
) -> None:
    """Every acknowledged stack is in Orthanc once, conformant, with the device's pixels,
    and was written once: streamed into its DICOM file at intake, never spooled raw."""
    assert report["unanswered"] == 0, "every complete offer got its ACK or NAK"
    rows = {r["device_capture_id"]: r for r in ledger_rows(tmp_path / "state")}
    assert sorted(rows) == sorted(report["acknowledged"]), "one ledger row per stack"
    assert [r["raw_name"] for r in rows.values()] == [""] * len(rows), "no raw copy"
    raw = tmp_path / "state" / "spool" / "raw"
    assert not raw.exists() or list(raw.iterdir()) == []
    for stack_id in report["acknowledged"]:
        row = rows[stack_id]
        found = orthanc.find_instances(row["sop_instance_uid"])
        assert len(found) == 1, f"{stack_id} stored exactly once"
        ds = pydicom.dcmread(io.BytesIO(orthanc.instance_file(found[0])))
        assert ds.SOPClassUID == sop_class
        assert iod_errors(ds) == []
        device = report["stacks"][stack_id]
        pixels = ds.PixelData[: device["length"]]
        assert hashlib.sha256(pixels).hexdigest() == device["sha256"]
        assert int(ds.NumberOfFrames) == device["frames"]
        for item in ds.get("PerFrameFunctionalGroupsSequence") or []:
            # the device's frame time (protocol ``frame_ms``) as each frame's duration
            assert item.FrameContentSequence[0].FrameAcquisitionDuration == 111.0
        if sop_class == TILED:
            # a whole-slide reader lays the tiles out as the device sent them: row by row
            height, width = int(ds.Rows), int(ds.Columns)
            size = height * width
            frames = [pixels[n * size : (n + 1) * size] for n in range(device["frames"])]
            grid_columns = int(ds.TotalPixelMatrixColumns) // width
            assert np.array_equal(
                total_pixel_matrix(ds), stitched(frames, height, width, grid_columns)
            )


def test_stacks_arrive_once_despite_garbage_and_reoffers(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    confocal_sim: Callable[..., ConfocalSimulator],
) -> None:
    sim = confocal_sim(
        "--stacks", "3", "--frames", "5", "--size", "64x64", "--garbage", "--reoffer"
    )
    gateway = gateway_factory(confocal_config(tmp_path, orthanc))
    assert sim.wait(120) == 0, gateway.log()
    report = sim.result()
    assert len(report["acknowledged"]) == 3
    assert report["offered"] >= 6, "each stack was offered again after its ACK"
    wait_for(lambda: states(tmp_path / "state") == ["COMMITTED"] * 3, 60, "3 stacks COMMITTED")
    check_in_orthanc(tmp_path, orthanc, report, Z_STACK)
    assert orthanc.count_instances() == 3
    assert gateway.stop() == 0


def test_mosaic_of_a_few_mb_survives_an_unplug_mid_transfer(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    confocal_sim: Callable[..., ConfocalSimulator],
) -> None:
    sim = confocal_sim(
        "--stacks", "2", "--mosaic", "--frames", "16", "--size", "512x512",
        "--unplug-mid-transfer",
    )  # fmt: skip
    gateway = gateway_factory(confocal_config(tmp_path, orthanc))
    assert sim.wait(120) == 0, gateway.log()
    report = sim.result()
    assert report["offered"] >= 3, "the unplugged stack was offered again"
    log = gateway.log()
    assert "discarded: link lost during transfer" in log, "the half-received stack was dropped"
    assert "rcm: DISCONNECTED" in log
    assert report["stacks"][report["acknowledged"][0]]["length"] == 16 * 512 * 512
    wait_for(lambda: states(tmp_path / "state") == ["COMMITTED"] * 2, 60, "2 mosaics COMMITTED")
    check_in_orthanc(tmp_path, orthanc, report, TILED)
    assert orthanc.count_instances() == 2
    assert list((tmp_path / "state" / "spool" / "staging").iterdir()) == []
    assert gateway.stop() == 0


def test_gateway_killed_mid_stack_restarts_and_stores_each_stack_once(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    confocal_sim: Callable[..., ConfocalSimulator],
) -> None:
    sim = confocal_sim(
        "--stacks", "2", "--frames", "20", "--size", "512x512", "--rate", "20",
    )  # fmt: skip
    config = confocal_config(tmp_path, orthanc)
    gateway = gateway_factory(config)
    staging = tmp_path / "state" / "spool" / "staging"

    def partly_staged() -> bool:
        return staging.exists() and any(f.stat().st_size > 0 for f in staging.iterdir())

    wait_for(partly_staged, 60, "a stack half-way through")
    gateway.kill()
    assert sim.proc.poll() is None, "the device keeps its stacks"
    assert sim.result()["acknowledged"] == []
    gateway.start()
    assert sim.wait(120) == 0, gateway.log()
    report = sim.result()
    assert len(report["acknowledged"]) == 2
    wait_for(lambda: states(tmp_path / "state") == ["COMMITTED"] * 2, 60, "2 stacks COMMITTED")
    check_in_orthanc(tmp_path, orthanc, report, Z_STACK)
    assert orthanc.count_instances() == 2
    assert list(staging.iterdir()) == [], "the partial stack of the killed run is gone"
    assert gateway.stop() == 0


def test_device_plugged_in_after_the_gateway_started(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    confocal_sim: Callable[..., ConfocalSimulator],
) -> None:
    """No device yet: DISCONNECTED, retried with backoff; plugged in: found and served."""
    gateway = gateway_factory(confocal_config(tmp_path, orthanc))
    gateway.wait_running()
    wait_for(lambda: "rcm: DISCONNECTED (device not found)" in gateway.log(), 30, "DISCONNECTED")
    sim = confocal_sim("--stacks", "1")
    assert sim.wait(60) == 0, gateway.log()
    wait_for(lambda: states(tmp_path / "state") == ["COMMITTED"], 60, "the stack COMMITTED")
    check_in_orthanc(tmp_path, orthanc, sim.result(), Z_STACK)
    log = gateway.log()
    assert log.index("rcm: CONNECTING") < log.index("rcm: READY") < log.index("rcm: TRANSFERRING")
    assert gateway.stop() == 0


def test_a_stack_costs_the_gateway_a_few_mb_above_idle(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    confocal_sim: Callable[..., ConfocalSimulator],
) -> None:
    """Goal 6 of issue 16 (bench/confocal_memory.py measures 1 GB): the stack streams
    through in 1 MiB blocks that go back to the system, so its peak above the idle
    process is a few MB whatever its size (it was ~16 MB while glibc's heaps kept
    the blocks; see gateway/core/heap.py)."""
    gateway = gateway_factory(confocal_config(tmp_path, orthanc))
    gateway.wait_running()
    wait_for(lambda: "rcm: DISCONNECTED (device not found)" in gateway.log(), 30, "DISCONNECTED")
    idle = gateway.vm_hwm()
    sim = confocal_sim("--stacks", "1", "--frames", "48", "--size", "1024x1024")
    assert sim.wait(120) == 0, gateway.log()
    wait_for(lambda: states(tmp_path / "state") == ["COMMITTED"], 60, "the stack COMMITTED")
    grown = (gateway.vm_hwm() - idle) / 1e6
    assert grown < 11, f"a 50 MB stack raised the gateway's peak by {grown:.1f} MB"
    assert gateway.stop() == 0


@pytest.mark.parametrize("kind", ["z-stack", "mosaic"])
def test_16bit_stack_arrives_losslessly_as_word_secondary_capture(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    confocal_sim: Callable[..., ConfocalSimulator],
    kind: str,
) -> None:
    """The Confocal Microscopy IODs take 8-bit pixels only (PS3.3 C.8.35.1 → C.8.12.1.1.2).

    A microscope set to 16 bits has its stack acknowledged and stored in the PACS all
    the same, exactly once, as Multi-frame Grayscale Word Secondary Capture with the
    device's pixels bit for bit, and Orthanc's copy passes dciodvfy with no error.
    """
    shape = ["--mosaic", "--frames", "4"] if kind == "mosaic" else ["--frames", "5"]
    sim = confocal_sim("--stacks", "1", "--bits", "16", "--size", "64x48", *shape)
    gateway = gateway_factory(confocal_config(tmp_path, orthanc))
    assert sim.wait(60) == 0, gateway.log()
    report = sim.result()
    assert len(report["acknowledged"]) == 1
    wait_for(lambda: states(tmp_path / "state") == ["COMMITTED"], 60, "the stack COMMITTED")
    row = ledger_rows(tmp_path / "state")[0]
    device = report["stacks"][report["acknowledged"][0]]
    assert row["raw_sha256"] == device["sha256"]
    found = orthanc.find_instances(row["sop_instance_uid"])
    assert len(found) == 1, "stored exactly once"
    assert orthanc.count_instances() == 1
    stored = tmp_path / "from-orthanc.dcm"
    stored.write_bytes(orthanc.instance_file(found[0]))
    ds = pydicom.dcmread(stored)
    assert ds.SOPClassUID == WORD_SC
    assert (ds.BitsAllocated, ds.BitsStored, int(ds.NumberOfFrames)) == (16, 16, device["frames"])
    assert len(ds.PixelData) == device["length"]
    assert hashlib.sha256(ds.PixelData).hexdigest() == device["sha256"], "lossless"
    assert dciodvfy_errors(stored) == []
    vector = "FrameLabelVector" if kind == "mosaic" else "SliceLocationVector"
    assert len(ds[vector].value) == device["frames"]
    # the device's frame time (protocol ``frame_ms``) between frames, as Cine timing
    assert [float(t) for t in ds.FrameTimeVector] == [0.0] + [111.0] * (device["frames"] - 1)
    assert gateway.stop() == 0


def test_full_disk_naks_the_stack_and_takes_it_once_there_is_room(
    tmp_path: Path,
    small_disk: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    confocal_sim: Callable[..., ConfocalSimulator],
) -> None:
    config = confocal_config(tmp_path, orthanc)
    text = config.read_text().replace(str(tmp_path / "state"), str(small_disk / "state"))
    config.write_text(text + "\n[spool]\nreserve_mb = 16\n")
    filler = small_disk / "filler"
    with filler.open("wb") as fh:
        for _ in range(44):
            fh.write(b"\0" * (1 << 20))  # ~20 MiB left: one 5 MB stack (raw + DICOM)
    sim = confocal_sim("--stacks", "3", "--frames", "20", "--size", "512x512")
    gateway = gateway_factory(config)
    state_dir = small_disk / "state"
    wait_for(lambda: any(r["reason"] == "DISK_FULL" for r in sim.result()["refused"]), 60, "NAK")
    assert len(ledger_rows(state_dir)) <= 1, "nothing accepted beyond the reserve"
    filler.unlink()
    assert sim.wait(120) == 0, gateway.log()
    report = sim.result()
    assert {r["reason"] for r in report["refused"]} == {"DISK_FULL"}
    assert report["unanswered"] == 0, "a NAKed offer is not left waiting for its ACK timeout"
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 3, 60, "all delivered")
    assert gateway.stop() == 0


def test_identical_microscopes_are_told_apart_by_usb_port(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    """Two RCM-1s (same VID:PID) on one box: each device entry serves the one on its port.

    The emulated bus is a folder with one socket per device; the simulators say they
    sit on ports 1-2 and 1-3. A third entry names a port with nothing on it and waits.
    """
    bus = tmp_path / "usb"
    bus.mkdir()
    sims = []
    for seed, port in ((1, "1-2"), (2, "1-3")):
        sock, report = bus / f"rcm-{seed}.sock", tmp_path / f"report-{seed}.json"
        cmd = [sys.executable, "-m", "gateway.cli", "simulate", "usb-confocal",
               "--socket", str(sock), "--report", str(report), "--stacks", "2",
               "--frames", "3", "--seed", str(seed), "--usb-port", port,
               "--usb-address", str(10 + seed), "--timeout", "120"]  # fmt: skip
        sims.append((subprocess.Popen(cmd), report))
        wait_for(sock.exists, 60, f"simulator {seed}'s socket")
    devices = "".join(
        f"""
[[devices]]
driver = "usb-confocal"
name = "{name}"
usb_backend = "emulated:{bus}"
usb_port = "{port}"
reconnect_max = 1
"""
        for name, port in (("left", "1-2"), ("right", "/dev/bus/usb/001/012"), ("spare", "1-4"))
    )
    config = gateway_config(
        tmp_path, pacs_port=orthanc.dicom_port, commit_via=orthanc, devices=devices
    )
    gateway = gateway_factory(config)
    try:
        for proc, _ in sims:
            assert proc.wait(120) == 0, gateway.log()[-3000:]
    finally:
        for proc, _ in sims:
            if proc.poll() is None:
                proc.kill()
    wait_for(lambda: states(tmp_path / "state") == ["COMMITTED"] * 4, 60, "4 stacks COMMITTED")
    serials = sorted(r["device_serial"] for r in ledger_rows(tmp_path / "state"))
    assert serials == ["RCM1-0001", "RCM1-0001", "RCM1-0002", "RCM1-0002"]
    log = gateway.log()
    assert "left: READY (RCM-1 Confocal Microscope RCM1-0001)" in log
    assert "right: READY (RCM-1 Confocal Microscope RCM1-0002)" in log
    assert "left: TRANSFERRING (RCM1-0002" not in log
    assert "right: TRANSFERRING (RCM1-0001" not in log
    assert "spare: DISCONNECTED (no device 1d50:6189 at USB port 1-4)" in log
    assert "spare: READY" not in log
    assert gateway.stop() == 0
