"""Bad input and failures on the device side, through the whole running gateway.

Every case runs the real ``dermgate run`` against the wire-level simulator: corrupt
frames, truncated captures, checksum mismatches, content that is not a usable JPEG,
re-offers, unplugging mid-transfer, and the gateway itself being killed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.demo.local_orthanc import OrthancProcess
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.simulator import SimulatorProcess
from tests.support.state import ledger_rows, states
from tests.support.waiting import wait_for


def staging_files(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "state" / "spool" / "staging").iterdir())


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("crc", "SEQUENCE"),
        ("truncate", "LENGTH"),
        ("sha", "CHECKSUM"),
        ("garbage", None),
        ("duplicate-frame", None),
    ],
)
def test_corrupt_transfers_are_nakked_and_nothing_half_written_is_kept(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
    fault: str,
    reason: str | None,
) -> None:
    sim = simulator_factory(
        "--captures", "2", "--interval", "0.1", "--retry-delay", "0.5", "--fault", fault
    )
    gateway = gateway_factory(gateway_config(tmp_path, pacs_port=orthanc.dicom_port))
    assert sim.wait(120) == 0, gateway.log()
    report = sim.result()
    refused = [(r["capture_id"], r["reason"]) for r in report["refused"]]
    assert refused == ([("000001", reason)] if reason else [])
    assert sorted(a["capture_id"] for a in report["acknowledged"]) == ["000001", "000002"]
    rows = ledger_rows(tmp_path / "state")
    assert sorted(r["device_capture_id"] for r in rows) == ["000001", "000002"]
    acked = {a["capture_id"]: a["sha256"] for a in report["acknowledged"]}
    assert all(r["raw_sha256"] == acked[r["device_capture_id"]] for r in rows)
    assert staging_files(tmp_path) == []
    wait_for(lambda: states(tmp_path / "state") == ["SENT", "SENT"], 60, "delivery")
    assert gateway.proc is not None
    assert gateway.proc.poll() is None, "the driver keeps running"
    assert gateway.stop() == 0


@pytest.mark.parametrize(
    ("fault", "words"),
    [("not-jpeg", "not a JPEG"), ("jpeg444", "4:4:4")],
)
def test_unusable_jpeg_is_kept_and_quarantined_with_a_reason(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
    fault: str,
    words: str,
) -> None:
    sim = simulator_factory("--captures", "2", "--interval", "0.1", "--fault", fault)
    gateway = gateway_factory(gateway_config(tmp_path, pacs_port=orthanc.dicom_port))
    assert sim.wait(120) == 0, "the capture was ACKed as bytes"
    state_dir = tmp_path / "state"

    def settled() -> dict[str, str] | None:
        rows = {r["device_capture_id"]: r["state"] for r in ledger_rows(state_dir)}
        return rows if rows == {"000001": "QUARANTINED", "000002": "SENT"} else None

    wait_for(settled, 60, "capture 1 quarantined, capture 2 sent")
    bad = next(r for r in ledger_rows(state_dir) if r["device_capture_id"] == "000001")
    assert words in bad["reason"]
    raw = state_dir / "spool" / "raw" / bad["raw_name"]
    assert raw.stat().st_size == bad["raw_size"], "the acknowledged bytes are kept"
    assert orthanc.find_instances(bad["sop_instance_uid"]) == []
    assert orthanc.count_instances() == 1
    assert gateway.stop() == 0


def test_reoffer_of_a_saved_capture_is_acked_again_without_a_second_object(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    sim = simulator_factory("--captures", "2", "--interval", "0.1", "--reoffer-acked")
    gateway = gateway_factory(gateway_config(tmp_path, pacs_port=orthanc.dicom_port))
    assert sim.wait(120) == 0
    wait_for(lambda: states(tmp_path / "state") == ["SENT", "SENT"], 60, "delivery")
    assert len(ledger_rows(tmp_path / "state")) == 2
    assert orthanc.count_instances() == 2
    assert "acknowledged again" in gateway.log()
    assert gateway.stop() == 0


def test_unplug_mid_transfer_then_reconnect(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    sim = simulator_factory(
        "--captures", "3", "--interval", "0.1", "--unplug-after-bytes", "1500000"
    )
    gateway = gateway_factory(gateway_config(tmp_path, pacs_port=orthanc.dicom_port))
    assert sim.wait(120) == 0, gateway.log()
    wait_for(lambda: states(tmp_path / "state") == ["SENT"] * 3, 60, "delivery")
    assert staging_files(tmp_path) == []
    assert orthanc.count_instances() == 3
    assert "port lost" in gateway.log()
    assert gateway.stop() == 0


def test_gateway_killed_mid_run_loses_and_duplicates_nothing(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    config = gateway_config(tmp_path, pacs_port=orthanc.dicom_port)
    sim = simulator_factory("--captures", "4", "--interval", "0.3")
    gateway = gateway_factory(config)
    state_dir = tmp_path / "state"
    wait_for(lambda: len(ledger_rows(state_dir)) >= 1, 60, "a first saved capture")
    gateway.kill()
    restarted = gateway_factory(config)
    assert sim.wait(120) == 0, restarted.log()
    wait_for(lambda: states(state_dir) == ["SENT"] * 4, 60, "delivery of all 4")
    rows = ledger_rows(state_dir)
    assert len({r["device_capture_id"] for r in rows}) == 4
    for row in rows:
        assert len(orthanc.find_instances(row["sop_instance_uid"])) == 1
    assert orthanc.count_instances() == 4
    assert restarted.stop() == 0
