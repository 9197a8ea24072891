"""A real small filesystem that fills up: refusal at the device, resumption, purge.

Each test mounts its own tmpfs (the tests run as root, as CI does) so that free
space is real: ENOSPC and watermarks come from the kernel, not from a mock.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.core.capture import CaptureOffer, InstanceUIDs
from gateway.core.config import SpoolSettings
from gateway.core.uids import new_uid
from gateway.demo.local_orthanc import OrthancProcess
from gateway.spool import commitments as cdb
from gateway.spool import ledger as db
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import Ledger
from gateway.spool.purge import Purger, used_percent
from tests.support.dicom_files import DEVICE
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.simulator import SimulatorProcess
from tests.support.state import ledger_rows, states
from tests.support.waiting import wait_for

MIB = 1024 * 1024


def fill(path: Path, mib: int) -> None:
    with open(path, "wb") as fh:
        for _ in range(mib):
            fh.write(b"\0" * MIB)


def test_full_disk_refuses_at_the_device_and_resumes_by_itself(
    tmp_path: Path,
    small_disk: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    config = gateway_config(tmp_path, pacs_port=orthanc.dicom_port, commit_via=orthanc)
    text = config.read_text().replace(str(tmp_path / "state"), str(small_disk / "state"))
    config.write_text(text + "\n[spool]\nreserve_mb = 16\n")
    filler = small_disk / "filler"
    fill(filler, 42)  # ~22 MiB left: room for one ~2.7 MB capture (counted twice) above 16 MiB
    sim = simulator_factory("--captures", "3", "--interval", "0.1", "--retry-delay", "0.5")
    gateway = gateway_factory(config)
    state_dir = small_disk / "state"
    wait_for(lambda: len(ledger_rows(state_dir)) == 1, 60, "the first capture")
    # Something else fills the disk: now it really is below the reserve.
    with filler.open("ab") as fh:
        fh.write(b"\0" * (shutil.disk_usage(small_disk).free - 8 * MIB))
    wait_for(lambda: "DISK FULL" in gateway.log(), 60, "the disk-full alarm")
    time.sleep(2)
    assert len(ledger_rows(state_dir)) == 1, "nothing more accepted while below the reserve"
    assert gateway.proc is not None
    assert gateway.proc.poll() is None
    filler.unlink()
    assert sim.wait(120) == 0, gateway.log()
    report = sim.result()
    assert {r["reason"] for r in report["refused"]} == {"DISK_FULL"}
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 3, 60, "all delivered")
    assert gateway.log().count("DISK FULL") == 1, "the alarm is raised once"
    assert "accepting captures again" in gateway.log()
    assert gateway.stop() == 0


def test_a_capture_that_does_not_fit_is_refused_alone_without_the_disk_full_alarm(
    tmp_path: Path,
    small_disk: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    """Free space above the reserve, but not enough for this capture: the device is
    told DISK_FULL for it (it keeps the capture and offers it again), the box raises no
    alarm, since its disk is not below the reserve; once there is room it goes through."""
    config = gateway_config(tmp_path, pacs_port=orthanc.dicom_port, commit_via=orthanc)
    text = config.read_text().replace(str(tmp_path / "state"), str(small_disk / "state"))
    config.write_text(text + "\n[spool]\nreserve_mb = 16\n")
    filler = small_disk / "filler"
    fill(filler, 45)  # ~19 MiB left: above the reserve, short of 2 x 2.7 MB above it
    sim = simulator_factory("--captures", "1", "--retry-delay", "0.5")
    gateway = gateway_factory(config)
    wait_for(lambda: len(sim.result()["refused"]) >= 3, 60, "the capture refused a few times")
    ledger_reserve = (small_disk / "state" / ".reserve").stat().st_size  # part of reserve_mb
    free = shutil.disk_usage(small_disk).free + ledger_reserve
    assert free >= 16 * MIB, "the disk is above its reserve"
    assert {r["reason"] for r in sim.result()["refused"]} == {"DISK_FULL"}
    assert "not enough space for this capture" in gateway.log()
    assert "DISK FULL" not in gateway.log(), "no global alarm for one capture that does not fit"
    filler.unlink()
    assert sim.wait(120) == 0, gateway.log()
    wait_for(lambda: states(small_disk / "state") == ["COMMITTED"], 60, "delivered")
    assert "DISK FULL" not in gateway.log()
    assert gateway.stop() == 0


def _spool_with(conn_path: Path, dirs: SpoolDirs, states_and_sizes: list[tuple[str, int]]) -> None:
    conn = db.open_ledger(conn_path)
    for n, (state, mib) in enumerate(states_and_sizes):
        uids = InstanceUIDs(new_uid(), new_uid(), new_uid())
        raw = f"{uids.sop_instance}.raw"
        fill(dirs.raw / raw, mib)
        (dirs.dicom / f"{uids.sop_instance}.dcm").write_bytes(b"DICM")
        spool_id = db.insert_capture(
            conn,
            driver="d",
            device=DEVICE,
            offer=CaptureOffer(f"{n}"),
            uids=uids,
            raw_name=raw,
            raw_size=mib * MIB,
            raw_sha256="0" * 64,
        )
        db.mark_wrapped(
            conn,
            spool_id,
            dicom_name=f"{uids.sop_instance}.dcm",
            sop_class_uid="1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.4.50",
            destinations=["pacs"],
            now=0,
        )
        if state in ("SENT", "COMMITTED"):
            # Confirmed by retention below: only the ones sent long ago.
            db.record_sent(conn, spool_id, "pacs", now=1.0 if state == "COMMITTED" else time.time())
    cdb.confirm_by_retention(conn, "pacs", 10.0)
    conn.close()


def test_purge_deletes_only_confirmed_copies_oldest_first_down_to_the_low_watermark(
    tmp_path: Path, small_disk: Path
) -> None:
    dirs = SpoolDirs(small_disk / "spool")
    dirs.create()
    plan = [
        ("COMMITTED", 8),
        ("SENT", 8),
        ("COMMITTED", 8),
        ("COMMITTED", 8),
        ("WRAPPED", 8),
        ("COMMITTED", 8),
    ]
    _spool_with(small_disk / "ledger.sqlite3", dirs, plan)
    fill(small_disk / "other", 6)
    before = used_percent(dirs)
    assert before > 80
    settings = SpoolSettings(purge_high_watermark=75, purge_low_watermark=50, keep_days=30)

    async def run() -> int:
        ledger = Ledger(small_disk / "ledger.sqlite3")
        ledger.start()
        try:
            return await Purger(ledger, dirs, settings).purge_once(datetime.now(UTC))
        finally:
            ledger.close()

    purged = asyncio.run(run())
    rows = ledger_rows(small_disk)
    assert [r["state"] for r in rows] == [
        "PURGED",
        "SENT",
        "PURGED",
        "PURGED",
        "WRAPPED",
        "COMMITTED",
    ], "oldest confirmed first, stopping below the low watermark; unconfirmed untouched"
    assert purged == 3
    assert used_percent(dirs) < 50
    for row in rows:
        exists = (dirs.raw / row["raw_name"]).exists()
        assert exists == (row["state"] != "PURGED")


def test_purge_by_age_even_with_space(tmp_path: Path) -> None:
    dirs = SpoolDirs(tmp_path / "spool")
    dirs.create()
    _spool_with(tmp_path / "ledger.sqlite3", dirs, [("COMMITTED", 1), ("SENT", 1)])
    # Space never calls for a purge here, however full the test machine's disk is.
    settings = SpoolSettings(keep_days=1, purge_high_watermark=100, purge_low_watermark=100)

    async def run(now: datetime) -> int:
        ledger = Ledger(tmp_path / "ledger.sqlite3")
        ledger.start()
        try:
            return await Purger(ledger, dirs, settings).purge_once(now)
        finally:
            ledger.close()

    assert asyncio.run(run(datetime.now(UTC))) == 0, "young copies stay while there is space"
    assert asyncio.run(run(datetime.now(UTC) + timedelta(days=2))) == 1
    assert [r["state"] for r in ledger_rows(tmp_path)] == ["PURGED", "SENT"]
