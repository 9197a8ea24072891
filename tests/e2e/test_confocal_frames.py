"""A confocal stack of many tiny frames: refused by count before it is acknowledged,
and memory that does not grow with the frame count (issue 11, item 4).

100,000 frames of 1×1 pixels are within the USB protocol's limits (2^20 frames) and
tiny in bytes, so ``max_capture_mb`` lets them in; wrapping them built one pydicom
Dataset per frame (797 MB for 100,000, 1.33 GB for 200,000), and the stack was
acknowledged before, so a crash there repeated at every start. Now:

* the ``usb-confocal`` driver refuses a header announcing more than ``max_frames``
  (default 10,000) with NAK TOO_MANY_FRAMES, before anything is staged or ACKed;
* the writer streams the per-frame functional groups frame by frame (peak memory
  of the real ``dermgate run`` wrapping 100,000 frames ≈ wrapping 1,000);
* a spooled stack beyond the hard bound (an older version acknowledged it) is
  quarantined with a reason, once, and not wrapped again at the next start.

Every gateway here runs as ``dermgate run`` under ``ulimit -n 1024`` (systemd's
default for a service); the device is the RCM-1 simulator over the emulated USB
backend. Memory is the gateway's own ``VmHWM`` from /proc, never a time.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest

from gateway.core.capture import CaptureOffer, ContentType, InstanceUIDs
from gateway.core.uids import new_uid
from gateway.demo.local_orthanc import OrthancProcess, free_port
from gateway.dicom.confocal import (
    MAX_FRAMES,
)
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import insert_capture, open_ledger
from tests.support.confocal_iod import iod_errors
from tests.support.confocal_stacks import IDENTITY, make_stack
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.state import ledger_rows, states
from tests.support.usb_confocal import ConfocalSimulator, confocal_config
from tests.support.waiting import wait_for

#: The gateway wrapping 100,000 one-pixel frames may peak this much above 1,000.
GROWTH = 1.3
PEAK_LIMIT_MB = 150  # the gateway peaks near 85 MB here; 100,000 frames took 800 MB on 20766cc


class LimitedGateway(GatewayProcess):
    """``dermgate run`` (under ``ulimit -n 1024``, as every test gateway) with its peak memory."""

    def peak_mb(self) -> float:
        """The process's peak resident set so far (VmHWM), in MB."""
        return self.vm_hwm() / (1024 * 1024)


@pytest.fixture
def limited_gateway(tmp_path: Path) -> Iterator[Callable[[Path], LimitedGateway]]:
    """Start ``dermgate run`` processes under ``ulimit -n 1024``; kill leftovers."""
    started: list[LimitedGateway] = []

    def start(config: Path) -> LimitedGateway:
        gateway = LimitedGateway(config, config.parent / "gateway.log")
        gateway.start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        if gateway.proc is not None and gateway.proc.poll() is None:
            gateway.proc.kill()
            gateway.proc.wait()
        gateway.close_logs()


# --- max_frames: refused before it is acknowledged ------------------------------------


def test_a_stack_over_max_frames_is_naked_at_its_header_and_the_next_stack_arrives(
    tmp_path: Path,
    orthanc: OrthancProcess,
    limited_gateway: Callable[[Path], LimitedGateway],
    confocal_sim: Callable[..., ConfocalSimulator],
) -> None:
    """200,000 frames of 1×1 (200 kB: far below max_capture_mb) against the default
    max_frames (10,000): NAK TOO_MANY_FRAMES at every offer, never ACKed, nothing
    staged or spooled, logged once; the next stack is ACKed and reaches the PACS."""
    config = confocal_config(tmp_path, orthanc)
    sim = confocal_sim(
        "--stacks", "2", "--frames", "3", "--size", "1x1", "--first-frames", "200000",
        "--retry-delay", "0.5",
    )  # fmt: skip
    gateway = limited_gateway(config)
    first, second = sorted(sim.result()["stacks"])
    assert sim.result()["stacks"][first]["frames"] == 200_000

    def refused_often() -> bool:
        report = sim.result()
        return second in report["acknowledged"] and len(report["refused"]) >= 3

    wait_for(refused_often, 90, "the long stack refused three times, the next one ACKed")
    report = sim.result()
    assert first not in report["acknowledged"], "the long stack was never acknowledged"
    assert {(r["id"], r["reason"]) for r in report["refused"]} == {(first, "TOO_MANY_FRAMES")}
    state_dir = tmp_path / "state"
    wait_for(lambda: orthanc.count_instances() == 1, 60, "the next stack in the PACS")
    rows = ledger_rows(state_dir)
    assert [r["device_capture_id"] for r in rows] == [second], "nothing of the long stack"
    spool = state_dir / "spool"
    assert list((spool / "staging").iterdir()) == [], "nothing staged"
    assert len(list((spool / "raw").iterdir())) <= 1
    ds = pydicom.dcmread(io.BytesIO(orthanc.instance_file(orthanc.find_instances(
        rows[0]["sop_instance_uid"])[0])))  # fmt: skip
    assert iod_errors(ds) == []
    log = gateway.log()
    refusals = [line for line in log.splitlines() if "max_frames" in line and "DEBUG" not in line]
    assert len(refusals) == 1, "logged once, not at every re-offer"
    assert "200000 frames" in refusals[0]
    assert "TOO_MANY_FRAMES" in refusals[0]
    assert "WARNING" in refusals[0]
    assert "Traceback" not in log
    assert gateway.stop() == 0


# --- wrapping: memory flat in the frame count ------------------------------------------


def seed_captured_stack(state_dir: Path, frames: int) -> int:
    """Put one CAPTURED z-stack of ``frames`` 1×1 frames into a new spool, as the
    usb-confocal driver and intake leave it (raw pixels + offer); return its id."""
    stack = replace(make_stack(frames=frames, size=1), columns=1)
    dirs = SpoolDirs(state_dir / "spool")
    dirs.create()
    pixels = bytes(i % 251 for i in range(frames))
    uids = InstanceUIDs(study=new_uid(), series=new_uid(), sop_instance=new_uid())
    raw_name = f"{uids.sop_instance}.raw"
    (dirs.raw / raw_name).write_bytes(pixels)
    offer = CaptureOffer(
        device_capture_id=f"RCM1-{frames}",
        acquired_at=datetime(2026, 11, 30, 10, 15, tzinfo=UTC),
        length=len(pixels),
        content_type=ContentType.PIXELS,
        extra=stack.to_extra(),
    )
    conn = open_ledger(state_dir / "ledger.sqlite3")
    try:
        return insert_capture(
            conn,
            driver="usb-confocal",
            device=IDENTITY,
            offer=offer,
            uids=uids,
            raw_name=raw_name,
            raw_size=len(pixels),
            raw_sha256=hashlib.sha256(pixels).hexdigest(),
        )
    finally:
        conn.close()


def wrap_in_gateway(
    tmp_path: Path, frames: int, start: Callable[[Path], LimitedGateway], limit_mb: float
) -> tuple[LimitedGateway, str]:
    """Run ``dermgate run`` on a spool holding one stack of ``frames`` until it leaves
    CAPTURED; fail as soon as the gateway's peak passes ``limit_mb``."""
    work = tmp_path / f"frames-{frames}"
    work.mkdir()
    state_dir = work / "state"
    seed_captured_stack(state_dir, frames)
    config = gateway_config(work, pacs_port=free_port(), devices="")
    gateway = start(config)

    def done() -> bool:
        peak = gateway.peak_mb()
        assert peak < limit_mb, f"{frames} frames: the gateway peaked at {peak:.0f} MB"
        return states(state_dir) != ["CAPTURED"]

    wait_for(done, 180, f"{frames} frames wrapped or quarantined", interval=0.05)
    return gateway, states(state_dir)[0]


def test_wrapping_100_000_one_pixel_frames_takes_no_more_memory_than_1_000(
    tmp_path: Path, limited_gateway: Callable[[Path], LimitedGateway]
) -> None:
    small, state = wrap_in_gateway(tmp_path, 1_000, limited_gateway, PEAK_LIMIT_MB)
    assert state == "WRAPPED"
    small_peak = small.peak_mb()
    assert small.stop() == 0
    large, state = wrap_in_gateway(
        tmp_path, MAX_FRAMES, limited_gateway, min(PEAK_LIMIT_MB, small_peak * GROWTH)
    )
    assert state == "WRAPPED"
    large_peak = large.peak_mb()
    assert large.stop() == 0
    print(f"peak: {small_peak:.1f} MB at 1000 frames, {large_peak:.1f} MB at {MAX_FRAMES}")
    assert large_peak < small_peak * GROWTH, (small_peak, large_peak)
    dicom = next((tmp_path / f"frames-{MAX_FRAMES}" / "state" / "spool" / "dicom").iterdir())
    ds = pydicom.dcmread(dicom, stop_before_pixels=True)
    groups = ds.PerFrameFunctionalGroupsSequence
    assert len(groups) == MAX_FRAMES == ds.NumberOfFrames
    last = groups[-1]
    assert last.FrameContentSequence[0].InStackPositionNumber == MAX_FRAMES
    depth = last.ConfocalMicroscopyImageFrameTypeSequence[0].ImageAcquisitionDepth
    assert depth == 4.0 * (MAX_FRAMES - 1) / 1000


def test_a_spooled_stack_beyond_the_hard_bound_is_quarantined_once_not_wrapped(
    tmp_path: Path, limited_gateway: Callable[[Path], LimitedGateway]
) -> None:
    """An older version acknowledged and spooled 200,001 frames: the wrap stage
    quarantines it with the reason (it stays kept), and the next start leaves it so."""
    frames = 2 * MAX_FRAMES + 1
    gateway, state = wrap_in_gateway(tmp_path, frames, limited_gateway, PEAK_LIMIT_MB)
    assert state == "QUARANTINED"
    state_dir = tmp_path / f"frames-{frames}" / "state"
    row = ledger_rows(state_dir)[0]
    reason = str(row["reason"] or "")
    assert f"{frames} frames" in reason
    assert "quarantined" in reason
    assert gateway.stop() == 0
    gateway.start()
    gateway.wait_running()
    time.sleep(2)  # the wrap stage looks at CAPTURED captures as it starts
    assert states(state_dir) == ["QUARANTINED"]
    assert (state_dir / "spool" / "raw" / row["raw_name"]).stat().st_size == frames
    assert gateway.stop() == 0
    assert gateway.log().count(f"{frames} frames") == 1, "quarantined once"


# --- the bytes are those of the pure builder ---------------------------------------------
