"""The kit's own rules, without processes: how reports are read and what is expected.

These guard the battery against passing for the wrong reason (a report read as
empty, an expectation that counts nothing).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.conformance.kit import SimulatorReport
from tests.conformance.registered import ADAPTERS
from tests.conformance.scanner_export import ScannerExportAdapter
from tests.conformance.serial_dermatoscope import SerialDermatoscopeAdapter


def test_kit_contract_report_is_read() -> None:
    report = SimulatorReport.from_json(
        {"acknowledged": ["a", "b"], "refused": [{"id": "c", "reason": "junk"}], "offered": 4}
    )
    assert report.acknowledged == ("a", "b")
    assert report.refused == (("c", "junk"),)
    assert report.offered == 4
    assert report.sha256 == {}


def test_serial_simulator_report_is_read_with_digests() -> None:
    report = SimulatorReport.from_json(
        {
            "acknowledged": [{"capture_id": "000001", "sha256": "ab"}],
            "refused": [{"capture_id": "000001", "reason": "CHECKSUM"}],
        }
    )
    assert report.acknowledged == ("000001",)
    assert report.refused == (("000001", "CHECKSUM"),)
    assert report.offered is None
    assert report.sha256 == {"000001": "ab"}


@pytest.mark.parametrize("data", [{}, {"acknowledged": "a"}, {"acknowledged": [7]}, []])
def test_a_report_outside_the_contract_fails_the_test(data: object) -> None:
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        SimulatorReport.from_json(data)


def test_expected_objects_count_each_acknowledged_capture_once() -> None:
    report = SimulatorReport.from_json({"acknowledged": ["x", "y", "x"], "refused": []})
    expected = ScannerExportAdapter().expected_objects(report)
    assert sum(expected.values()) == 8, "two exports, four objects each"
    assert set(expected) == set(ScannerExportAdapter.objects_per_capture)


def test_sent_digests_of_a_drop_folder_skip_what_becomes_no_object(tmp_path: Path) -> None:
    adapter = ScannerExportAdapter()
    entry = adapter.drop_folder(tmp_path) / ".processed" / "scan-1"
    entry.mkdir(parents=True)
    (entry / "body.obj").write_bytes(b"v 0 0 0\n")
    (entry / "manifest.json").write_bytes(b"{}")
    report = SimulatorReport.from_json({"acknowledged": ["scan-1"], "refused": []})
    assert adapter.sent_digests(report, tmp_path) == {hashlib.sha256(b"v 0 0 0\n").hexdigest()}


def test_sent_digests_of_a_wire_device_come_from_its_report(tmp_path: Path) -> None:
    report = SimulatorReport.from_json(
        {"acknowledged": [{"capture_id": "1", "sha256": "aa"}], "refused": []}
    )
    assert SerialDermatoscopeAdapter().sent_digests(report, tmp_path) == {"aa"}


def test_every_registered_adapter_names_a_driver_and_its_objects() -> None:
    drivers = [adapter.driver for adapter in ADAPTERS]
    assert len(drivers) == len(set(drivers))
    for adapter in ADAPTERS:
        assert adapter.objects_per_capture, adapter.driver
        assert all(
            uid.startswith("1.2.840.10008.5.1.4.1.1.") for uid in adapter.objects_per_capture
        )
        assert 'name = "dev"' in adapter.device_toml(Path("/nonexistent"))
