"""A lost ledger: ``dermgate run`` refuses to start, ``dermgate spool rebuild`` recovers.

Before, a missing or 0-byte ledger was silently replaced by an empty one and every
acknowledged capture was moved to ``orphans/``, never sent, with no alarm.
"""

from __future__ import annotations

import fcntl
import io
import os
from collections.abc import Callable
from pathlib import Path

import pydicom

from gateway.demo.local_orthanc import OrthancProcess
from gateway.spool import ledger as db
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.simulator import SimulatorProcess
from tests.support.spool import PATIENT, SECRETS, Spool, dermgate, lose_ledger, run_once
from tests.support.state import ledger_rows, states
from tests.support.waiting import wait_for


def spool_files(state_dir: Path) -> dict[str, int]:
    """Every file under ``state_dir/spool`` with its size."""
    root = state_dir / "spool"
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def test_a_lost_ledger_is_refused_then_rebuilt_and_sent_again_under_the_same_uids(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    config = gateway_config(tmp_path, pacs_port=orthanc.dicom_port, commit_via=orthanc)
    state_dir = tmp_path / "state"
    sim = simulator_factory("--captures", "3", "--interval", "0.2")
    gateway = gateway_factory(config)
    assert sim.wait(180) == 0, gateway.log()[-4000:]
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 3, 90, "3 captures COMMITTED")
    before = {
        r["sop_instance_uid"]: (r["study_uid"], r["series_uid"], r["sop_class_uid"])
        for r in ledger_rows(state_dir)
    }
    assert gateway.stop() == 0
    # The PACS forgets them, so that what arrives below arrives because of the rebuild.
    for uid in before:
        for orthanc_id in orthanc.find_instances(uid):
            orthanc.rest("DELETE", f"/instances/{orthanc_id}")
    assert orthanc.count_instances() == 0

    ledger = lose_ledger(state_dir)
    files = spool_files(state_dir)
    assert len([name for name in files if name.startswith("dicom/")]) == 3

    refused = run_once(config)
    assert refused.returncode == 1, refused.stderr
    assert str(ledger) in refused.stderr
    assert "empty" in refused.stderr
    assert "3 DICOM file(s)" in refused.stderr
    assert f"dermgate spool rebuild --config {config}" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert spool_files(state_dir) == files, "nothing moved, nothing deleted"
    assert ledger.stat().st_size == 0, "the empty ledger was not replaced"

    rebuilt = dermgate("rebuild", config=config)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "3 capture(s) recorded as WRAPPED" in rebuilt.stdout
    assert spool_files(state_dir) == files, "rebuild reads the spool, moves nothing"
    assert sorted(r["sop_instance_uid"] for r in ledger_rows(state_dir)) == sorted(before)
    assert set(states(state_dir)) == {"WRAPPED"}

    again = gateway_factory(config)
    wait_for(
        lambda: all(orthanc.find_instances(uid) for uid in before), 90, "the PACS to get all 3"
    )
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 3, 90, "3 captures COMMITTED again")
    assert orthanc.count_instances() == 3, "no instance under a new UID"
    for uid, (study, series, sop_class) in before.items():
        [orthanc_id] = orthanc.find_instances(uid)
        stored = pydicom.dcmread(io.BytesIO(orthanc.instance_file(orthanc_id)))
        assert (stored.StudyInstanceUID, stored.SeriesInstanceUID, stored.SOPClassUID) == (
            study,
            series,
            sop_class,
        )
    assert not (state_dir / "spool" / "orphans").exists()
    assert again.stop() == 0


def test_a_missing_ledger_beside_captures_is_refused(spool: Spool) -> None:
    spool.add()
    spool.conn.close()
    ledger = spool.config.parent / "state" / "ledger.sqlite3"
    ledger.unlink()
    files = spool_files(ledger.parent)

    refused = run_once(spool.config)
    assert refused.returncode == 1, refused.stderr
    assert "missing" in refused.stderr
    assert "1 DICOM file(s) and 1 raw capture file(s)" in refused.stderr
    assert spool_files(ledger.parent) == files
    assert not ledger.exists()


def test_rebuild_keeps_raw_captures_without_a_dicom_file_and_reports_them(
    spool: Spool, tmp_path: Path
) -> None:
    wrapped_id, wrapped_uid = spool.add(patient=PATIENT)
    _, raw_uid = spool.add(wrap=False)
    (spool.dirs.dicom / "damaged.dcm").write_bytes(b"not DICOM at all")
    (spool.dirs.staging / "abc.part").write_bytes(b"never acknowledged")
    spool.conn.close()
    state_dir = spool.dirs.root.parent
    lose_ledger(state_dir)
    files = spool_files(state_dir)

    result = dermgate("rebuild", config=spool.config)
    assert result.returncode == 0, result.stderr
    assert "1 capture(s) recorded as WRAPPED" in result.stdout
    assert f"{raw_uid}.raw" in result.stdout, "the raw capture is reported"
    assert "damaged.dcm" in result.stdout, "an unreadable file is reported"
    assert spool_files(state_dir) == files, "every file kept in place"
    for secret in SECRETS:
        assert secret not in result.stdout + result.stderr

    # The raw capture was acknowledged to its device: it stays visible in the spool,
    # set aside with a reason (never silently moved to orphans/), and can be exported.
    row, raw_row = ledger_rows(state_dir)
    assert raw_row["state"] == "QUARANTINED"
    assert raw_row["raw_name"] == f"{raw_uid}.raw"
    assert "lost ledger" in raw_row["reason"]
    assert f"spool id {raw_row['id']}: {raw_uid}.raw" in result.stdout
    listed = dermgate("list", config=spool.config)
    assert listed.returncode == 0, listed.stderr
    assert any(
        line.split()[:2] == [str(raw_row["id"]), "QUARANTINED"]
        for line in listed.stdout.splitlines()
    ), listed.stdout
    refused = dermgate("retry", raw_row["id"], config=spool.config)
    assert refused.returncode == 4, "it cannot be wrapped without its device and patient"
    assert "export it" in refused.stderr
    raw_out = dermgate("export", raw_row["id"], "--to", tmp_path / "raw_out", config=spool.config)
    assert raw_out.returncode == 0, raw_out.stderr
    [copied] = (tmp_path / "raw_out").iterdir()
    assert copied.read_bytes() == (spool.dirs.raw / f"{raw_uid}.raw").read_bytes()
    assert row["sop_instance_uid"] == wrapped_uid
    assert row["state"] == "WRAPPED"
    assert row["raw_name"] == f"{wrapped_uid}.raw", "the raw file it came from is its own"
    assert row["dicom_name"] == f"{wrapped_uid}.dcm"
    # The patient the file names is kept, so a later re-wrap names the same patient.
    assert db.patient_from_json(row["patient_json"]) == PATIENT
    conn = db.open_ledger(state_dir / "ledger.sqlite3", readonly=True)
    try:
        [delivery] = conn.execute("SELECT destination, state FROM deliveries").fetchall()
    finally:
        conn.close()
    assert tuple(delivery) == ("pacs", "PENDING")

    shown = dermgate("show", row["id"], "--json", config=spool.config)
    assert shown.returncode == 0, shown.stderr
    exported = dermgate("export", row["id"], "--to", tmp_path / "out", config=spool.config)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "out" / f"{wrapped_uid}.dcm").read_bytes() == (
        spool.dirs.dicom / f"{wrapped_uid}.dcm"
    ).read_bytes()
    assert wrapped_id  # (its old spool id is gone with the old ledger)


def test_rebuild_refuses_an_existing_ledger(spool: Spool) -> None:
    spool.add()
    spool.conn.close()
    ledger = spool.config.parent / "state" / "ledger.sqlite3"
    before = ledger.read_bytes()

    result = dermgate("rebuild", config=spool.config)
    assert result.returncode == 1
    assert "not empty" in result.stderr
    assert ledger.read_bytes() == before


def test_rebuild_refuses_while_the_service_holds_the_state(spool: Spool) -> None:
    spool.add()
    spool.conn.close()
    state_dir = spool.dirs.root.parent
    lose_ledger(state_dir)
    lock = state_dir / "dermgate.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\n".encode())
        result = dermgate("rebuild", config=spool.config)
    finally:
        os.close(fd)
    assert result.returncode == 1
    assert str(lock) in result.stderr
    assert f"PID {os.getpid()}" in result.stderr
    assert (state_dir / "ledger.sqlite3").stat().st_size == 0
