"""Spool ids are never handed out twice, even across a lost ledger, checked through
``dermgate run`` and ``dermgate spool rebuild`` (crashes, damaged marks, rebuilt
ledgers and the temporary patients a real Orthanc stores). The id reservation itself
is in ``tests/unit/test_spool_ids.py``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pydicom

from gateway.core.capture import PatientContext
from gateway.core.patient import temporary_patient, temporary_spool_id
from gateway.demo.local_orthanc import OrthancProcess
from gateway.spool.spool_ids import (
    high_water_path,
    read_high_water,
    write_high_water,
)
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.simulator import SimulatorProcess
from tests.support.spool import PATIENT, Spool, dermgate, lose_ledger, run_once
from tests.support.state import ledger_rows, states
from tests.support.waiting import wait_for

GATEWAY_ID = "test-box-01"  # gateway_config's and write_config's


FAST_PURGE = """
[spool]
keep_days = 0.00001
purge_interval = 0.5
"""


_TAKER = """
import sys
from pathlib import Path
from gateway.spool.spool_ids import SpoolIdCounter, read_high_water
counter = SpoolIdCounter.open(Path(sys.argv[1]), ledger_highest=0, block=int(sys.argv[2]))
while True:
    spool_id = counter.take()
    assert read_high_water(counter.path) > spool_id  # durable before it is handed out
    print(spool_id, flush=True)
"""


def test_a_crash_anywhere_leaves_a_gap_never_a_reuse(tmp_path: Path) -> None:
    """A process taking ids is SIGKILLed at random points and started again over an
    empty ledger (the worst case: the ledger was lost too): no id is ever handed
    out twice. With blocks of one id, the mark is written at every take, so most
    kills land in the middle of a write."""
    mark = tmp_path / "spool-ids.next"
    rng = random.Random(10)
    handed_out: list[int] = []
    for round_ in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-c", _TAKER, str(mark), str(1 if round_ % 2 else 3)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        for _ in range(rng.randrange(1, 40)):
            handed_out.append(int(proc.stdout.readline()))
        time.sleep(rng.random() * 0.01)  # somewhere in a take, or in a write of the mark
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        handed_out.extend(int(line) for line in proc.stdout.read().split())
        proc.stdout.close()
    assert len(handed_out) == len(set(handed_out)), "an id was handed out twice"
    assert handed_out == sorted(handed_out)
    mark_now = read_high_water(mark)
    assert mark_now is not None
    assert mark_now > max(handed_out)


def test_run_refuses_a_damaged_mark_and_changes_nothing(tmp_path: Path) -> None:
    config = gateway_config(tmp_path, pacs_port=4242)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    mark = high_water_path(state_dir)
    mark.write_bytes(b"garbage")

    refused = run_once(config)
    assert refused.returncode == 1, refused.stderr
    assert str(mark) in refused.stderr
    assert "damaged" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert mark.read_bytes() == b"garbage"
    assert sorted(p.name for p in state_dir.iterdir()) == ["dermgate.lock", mark.name]


def test_rebuild_keeps_temporary_ids_and_numbers_the_rest_above_every_id(spool: Spool) -> None:
    """Files named after spool ids 7 (twice: one 3D export) and 3, a known patient and
    another gateway's temporary patient; the box's mark says ids up to 19 were used."""

    def tmp(n: int, gateway_id: str = GATEWAY_ID) -> PatientContext:
        return temporary_patient(gateway_id, n)

    made = [
        spool.add(patient=tmp(7)),
        spool.add(patient=PATIENT),
        spool.add(patient=tmp(7)),
        spool.add(patient=tmp(3)),
        spool.add(patient=tmp(5, "other-box")),
    ]
    for order, (_, uid) in enumerate(made):
        os.utime(spool.dirs.dicom / f"{uid}.dcm", (1_700_000_000 + order,) * 2)
    spool.conn.close()
    state_dir = spool.dirs.root.parent
    mark = high_water_path(state_dir)
    write_high_water(mark, 20)
    lose_ledger(state_dir)

    result = dermgate("rebuild", config=spool.config)
    assert result.returncode == 0, result.stderr
    assert "2 capture(s) kept the spool id of their temporary Patient ID" in result.stdout
    ids = {r["sop_instance_uid"]: r["id"] for r in ledger_rows(state_dir)}
    assert [ids[uid] for _, uid in made] == [7, 20, 21, 3, 22]
    assert read_high_water(mark) == 23
    assert "warning" not in result.stdout


def test_rebuild_without_a_mark_numbers_above_every_id_found_and_says_so(spool: Spool) -> None:
    _, known = spool.add(patient=PATIENT)
    _, temporary = spool.add(patient=temporary_patient(GATEWAY_ID, 40))
    for order, uid in enumerate((known, temporary)):
        os.utime(spool.dirs.dicom / f"{uid}.dcm", (1_700_000_000 + order,) * 2)
    spool.conn.close()
    state_dir = spool.dirs.root.parent
    lose_ledger(state_dir)

    result = dermgate("rebuild", config=spool.config)
    assert result.returncode == 0, result.stderr
    ids = {r["sop_instance_uid"]: r["id"] for r in ledger_rows(state_dir)}
    assert ids == {temporary: 40, known: 41}
    assert read_high_water(high_water_path(state_dir)) == 42
    assert "warning: there was no spool id mark" in result.stdout


def test_rebuild_refuses_a_damaged_mark(spool: Spool) -> None:
    spool.add()
    spool.conn.close()
    state_dir = spool.dirs.root.parent
    lose_ledger(state_dir)
    high_water_path(state_dir).write_bytes(b"1O00\n")

    result = dermgate("rebuild", config=spool.config)
    assert result.returncode == 1
    assert "damaged" in result.stderr
    assert "nothing rebuilt" in result.stderr
    assert (state_dir / "ledger.sqlite3").stat().st_size == 0


def _purged_then_lost(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> Path:
    """Three captures sent, confirmed and purged; two more sent and confirmed, still
    in the spool; then the ledger is lost and rebuilt. Returns the configuration."""
    state_dir = tmp_path / "state"
    config = gateway_config(tmp_path, pacs_port=orthanc.dicom_port, commit_via=orthanc)
    config.write_text(config.read_text(encoding="utf-8") + FAST_PURGE, encoding="utf-8")
    gateway = gateway_factory(config)
    sim = simulator_factory("--captures", "3", "--interval", "0.2", "--seed", "1")
    assert sim.wait(180) == 0, gateway.log()[-4000:]
    wait_for(lambda: states(state_dir) == ["PURGED"] * 3, 90, "3 captures purged")
    assert gateway.stop() == 0

    config = gateway_config(tmp_path, pacs_port=orthanc.dicom_port, commit_via=orthanc)
    gateway = gateway_factory(config)
    sim = simulator_factory("--captures", "2", "--interval", "0.2", "--seed", "2")
    assert sim.wait(180) == 0, gateway.log()[-4000:]
    wait_for(
        lambda: states(state_dir) == ["PURGED"] * 3 + ["COMMITTED"] * 2,
        90,
        "2 more captures COMMITTED",
    )
    assert gateway.stop() == 0
    assert orthanc.count_instances() == 5

    lose_ledger(state_dir)
    rebuilt = dermgate("rebuild", config=config)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "2 capture(s) recorded as WRAPPED" in rebuilt.stdout
    return config


def _temporary_number(path: Path) -> int | None:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return temporary_spool_id(str(ds.PatientID), str(ds.IssuerOfPatientID), GATEWAY_ID)


def test_after_a_rebuild_spool_show_finds_the_capture_its_temporary_id_names(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    config = _purged_then_lost(tmp_path, orthanc, gateway_factory, simulator_factory)
    state_dir = tmp_path / "state"
    dicom = state_dir / "spool" / "dicom"
    files = sorted(dicom.glob("*.dcm"))
    assert len(files) == 2
    for path in files:
        number = _temporary_number(path)
        assert number is not None, "a capture without a patient has a temporary one"
        shown = dermgate("show", number, "--reveal", "--json", config=config)
        assert shown.returncode == 0, shown.stderr
        details = json.loads(shown.stdout)
        assert details["id"] == number
        assert f"{details['sop_instance_uid']}.dcm" == path.name, (
            f"spool show {number} shows another capture than TMP-{GATEWAY_ID}-{number}"
        )
        assert details["patient"]["PatientID"] == f"TMP-{GATEWAY_ID}-{number}"


def test_after_a_lost_ledger_no_two_captures_share_a_temporary_patient_at_the_pacs(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    config = _purged_then_lost(tmp_path, orthanc, gateway_factory, simulator_factory)
    state_dir = tmp_path / "state"

    gateway = gateway_factory(config)
    sim = simulator_factory("--captures", "3", "--interval", "0.2", "--seed", "3")
    assert sim.wait(180) == 0, gateway.log()[-4000:]
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 5, 90, "5 captures COMMITTED")
    assert gateway.stop() == 0

    patients: dict[str, list[str]] = {}
    for orthanc_id in orthanc.rest("GET", "/instances"):
        tags = orthanc.rest("GET", f"/instances/{orthanc_id}/simplified-tags")
        assert tags["IssuerOfPatientID"] == f"{GATEWAY_ID}-TEMP"
        assert tags["PatientID"].startswith(f"TMP-{GATEWAY_ID}-")
        patients.setdefault(tags["PatientID"], []).append(tags["SOPInstanceUID"])
    captures = 3 + 2 + 3
    shared = {pid: uids for pid, uids in patients.items() if len(uids) > 1}
    assert not shared, f"captures of different people under one patient: {shared}"
    assert sum(len(uids) for uids in patients.values()) == captures
    assert orthanc.rest("GET", "/statistics")["CountPatients"] == captures
