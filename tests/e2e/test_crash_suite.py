"""The fault suite: the gateway SIGKILLed at random points, again and again.

The simulator keeps offering while ``dermgate run`` is killed at random moments —
during intake, wrapping, mid-C-STORE, between SENT and COMMITTED — and restarted,
at least 25 times. Afterwards the PACS (real Orthanc, with Storage Commitment)
holds exactly the acknowledged captures, each once, found by SOP Instance UID, and
the ledger shows every one COMMITTED (or PURGED: the test purges confirmed copies a
few seconds after arrival, so that kills also land during purges).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

from gateway.demo.local_orthanc import OrthancProcess
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.simulator import SimulatorProcess
from tests.support.state import ledger_rows, states
from tests.support.waiting import wait_for

KILLS = 25
CAPTURES = 10


def test_random_sigkills_lose_and_duplicate_nothing(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    seed = random.randrange(1 << 30)
    print(f"crash suite seed {seed}")
    rng = random.Random(seed)
    config = gateway_config(
        tmp_path, pacs_port=orthanc.dicom_port, commit_via=orthanc, commitment_timeout=3.0
    )
    # Purge confirmed copies a few seconds after arrival, so kills land during purges too.
    config.write_text(config.read_text() + "\n[spool]\nkeep_days = 0.00005\npurge_interval = 0.5\n")
    sim = simulator_factory(
        "--captures",
        str(CAPTURES),
        "--interval",
        "0.4",
        "--retry-delay",
        "0.3",
        "--ack-timeout",
        "5",
    )
    state_dir = tmp_path / "state"
    kill_states: list[tuple[str, ...]] = []
    for _ in range(KILLS):
        gateway = gateway_factory(config)
        time.sleep(rng.uniform(0.3, 2.5))
        gateway.kill()
        kill_states.append(tuple(states(state_dir)))
    final = gateway_factory(config)
    final.wait_running()
    assert sim.wait(240) == 0, final.log()[-4000:]
    acknowledged = sim.result()["acknowledged"]
    assert len(acknowledged) == CAPTURES
    confirmed = {"COMMITTED", "PURGED"}
    wait_for(
        lambda: len(states(state_dir)) == CAPTURES and set(states(state_dir)) <= confirmed,
        120,
        "all COMMITTED (or already PURGED)",
    )

    rows = ledger_rows(state_dir)
    by_capture = {r["device_capture_id"]: r for r in rows}
    assert len(rows) == CAPTURES, "one ledger row per acknowledged capture"
    for acked in acknowledged:
        row = by_capture[acked["capture_id"]]
        assert row["raw_sha256"] == acked["sha256"]
        assert len(orthanc.find_instances(row["sop_instance_uid"])) == 1
    assert orthanc.count_instances() == CAPTURES, "no capture stored under a second UID"
    for row in rows:
        if row["state"] == "PURGED":
            assert not (state_dir / "spool" / "dicom" / row["dicom_name"]).exists()
    assert final.stop() == 0
    seen = {state for snapshot in kill_states for state in snapshot}
    print(f"states seen at kill time: {sorted(seen)}")
    assert len(kill_states) >= 25


def test_orthanc_killed_mid_transfer_then_back(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    config = gateway_config(
        tmp_path,
        pacs_port=orthanc.dicom_port,
        commit_via=orthanc,
        commitment_timeout=3.0,
        retry_max=1.0,
    )
    sim = simulator_factory("--captures", "8", "--interval", "0.1")
    gateway = gateway_factory(config)
    state_dir = tmp_path / "state"
    wait_for(
        lambda: any(s in ("SENT", "COMMITTED") for s in states(state_dir)), 60, "a first delivery"
    )
    orthanc.kill()
    time.sleep(1.0)
    orthanc.start()
    assert sim.wait(120) == 0
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 8, 120, "all COMMITTED")
    for row in ledger_rows(state_dir):
        assert len(orthanc.find_instances(row["sop_instance_uid"])) == 1
    assert orthanc.count_instances() == 8
    assert gateway.stop() == 0
