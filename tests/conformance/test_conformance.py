"""The conformance battery against every first-party driver and its own simulator.

Each test runs one check of the package's kit (:mod:`gateway.conformance.checks`:
connect, capture, unplug, reoffer, garbage, restart) with the real ``dermgate run``,
Storage Commitment and a private Orthanc (one per test), and the driver's simulator
as a separate process. The kit learns how to drive each simulator from the driver
itself (its ``conformance`` hook), exactly as ``dermgate conformance DRIVER`` does;
``test_command.py`` runs that command.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.conformance import CHECKS, conformance_run
from gateway.devices.registry import find_driver
from gateway.devices.simulator_hook import load_adapter

#: The drivers DermGate ships; each must pass every check.
FIRST_PARTY = ("serial-dermatoscope", "usb-confocal", "scanner-export", "photo-folder")


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("driver", FIRST_PARTY)
def test_first_party_driver_passes(driver: str, check: str, tmp_path: Path) -> None:
    adapter = load_adapter(find_driver(driver))
    with conformance_run(driver, adapter, tmp_path) as run:
        CHECKS[check](run)
