"""The kit's own rules, without processes: how reports are read, what is expected, and
how a driver's simulator hook is found.

These guard the battery against passing for the wrong reason (a report read as
empty, an expectation that counts nothing) and a driver's author against a hook
that silently does nothing.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any, ClassVar

import pytest

from gateway.conformance.peers import ledger_rows
from gateway.devices.registry import find_driver
from gateway.devices.simulator_hook import (
    DEVICE_NAME,
    HookError,
    ReportError,
    SimulatorAdapter,
    SimulatorReport,
    load_adapter,
)
from tests.conformance.test_conformance import FIRST_PARTY


def adapter(driver: str) -> SimulatorAdapter:
    """The adapter a driver's conformance hook names."""
    return load_adapter(find_driver(driver))


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
def test_a_report_outside_the_contract_is_refused(data: object) -> None:
    with pytest.raises(ReportError):
        SimulatorReport.from_json(data)


def test_expected_objects_count_each_acknowledged_capture_once() -> None:
    report = SimulatorReport.from_json({"acknowledged": ["x", "y", "x"], "refused": []})
    scanner = adapter("scanner-export")
    expected = scanner.expected_objects(report)
    assert sum(expected.values()) == 8, "two exports, four objects each"
    assert set(expected) == set(scanner.objects_per_capture)


def test_sent_digests_of_a_drop_folder_skip_what_becomes_no_object(tmp_path: Path) -> None:
    scanner = adapter("scanner-export")
    folder = scanner.drop_folder(tmp_path)
    assert folder is not None
    entry = folder / ".processed" / "scan-1"
    entry.mkdir(parents=True)
    (entry / "body.obj").write_bytes(b"v 0 0 0\n")
    (entry / "manifest.json").write_bytes(b"{}")
    report = SimulatorReport.from_json({"acknowledged": ["scan-1"], "refused": []})
    assert scanner.sent_digests(report, tmp_path) == {hashlib.sha256(b"v 0 0 0\n").hexdigest()}


def test_sent_digests_of_a_wire_device_come_from_its_report(tmp_path: Path) -> None:
    report = SimulatorReport.from_json(
        {"acknowledged": [{"capture_id": "1", "sha256": "aa"}], "refused": []}
    )
    assert adapter("serial-dermatoscope").sent_digests(report, tmp_path) == {"aa"}


@pytest.mark.parametrize("driver", [*FIRST_PARTY, "test-template"])
def test_every_hook_names_an_adapter_with_objects_and_a_device_section(driver: str) -> None:
    found = adapter(driver)
    assert found.objects_per_capture
    assert all(uid.startswith("1.2.840.10008.5.1.4.1.1.") for uid in found.objects_per_capture)
    section = tomllib.loads(found.device_toml(driver, Path("/nonexistent")))["devices"][0]
    assert section["driver"] == driver
    assert section["name"] == DEVICE_NAME


def test_device_options_become_toml_values_that_read_back_the_same() -> None:
    class Odd(SimulatorAdapter):
        objects_per_capture: ClassVar[dict[str, int]] = {"1.2.3": 1}

        def device_options(self, workdir: Path) -> dict[str, Any]:
            return {"path": str(workdir / 'quote"and\\back'), "n": 3, "x": 0.25, "on": True,
                    "list": ["a", 1]}  # fmt: skip

        def simulator_args(self, workdir: Path, *, captures: int) -> list[str]:
            return []

    section = tomllib.loads(Odd().device_toml("odd", Path("/w")))["devices"][0]
    assert section == {
        "driver": "odd",
        "name": DEVICE_NAME,
        "path": '/w/quote"and\\back',
        "n": 3,
        "x": 0.25,
        "on": True,
        "list": ["a", 1],
    }


class _NoHook:
    id = "no-hook"
    simulator = "x:main"


class _NotAnAdapter(_NoHook):
    conformance = "gateway.devices.simulator_hook:SimulatorReport"


class _Missing(_NoHook):
    conformance = "no_such_module_anywhere:Adapter"


class _Abstract(_NoHook):
    conformance = "gateway.devices.simulator_hook:SimulatorAdapter"


class _NoSimulator:
    id = "no-simulator"
    conformance = "drivers.photo_folder.conformance:PhotoFolderAdapter"


@pytest.mark.parametrize(
    ("factory", "words"),
    [
        (_NoHook, "has no conformance hook"),
        (_NotAnAdapter, "is not a SimulatorAdapter subclass"),
        (_Missing, "failed to load: ModuleNotFoundError"),
        (_Abstract, "cannot be built"),
        (_NoSimulator, "has no simulator"),
    ],
)
def test_a_broken_hook_is_named(factory: type, words: str) -> None:
    with pytest.raises(HookError, match=words):
        load_adapter(factory)


def test_ledger_rows_of_no_ledger_are_none(tmp_path: Path) -> None:
    assert ledger_rows(tmp_path) == []
    (tmp_path / "ledger.sqlite3").write_bytes(b"")  # created, not yet migrated
    assert ledger_rows(tmp_path) == []
