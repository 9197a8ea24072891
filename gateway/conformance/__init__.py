"""The driver conformance kit: one battery every driver passes with its own simulator.

It sits at the top of the layers, beside the CLI: it may import anything in
``gateway``, and nothing in ``gateway`` imports it but the CLI (``dermgate
conformance DRIVER``, :mod:`gateway.conformance.command`). A driver takes part by
naming a :class:`~gateway.devices.simulator_hook.SimulatorAdapter` in its
``conformance`` class attribute (exported to drivers by ``gateway.driver_api``); the
kit then runs, for each check, the driver's simulator (``dermgate simulate``), the
real ``dermgate run`` and a private Orthanc as the PACS, and judges what reached the
PACS against what the simulated device says it was told.

- :mod:`~gateway.conformance.checks`: the checks (connect, capture, unplug, reoffer,
  garbage, restart);
- :mod:`~gateway.conformance.harness`: one check's world and the assertions they share;
- :mod:`~gateway.conformance.peers`: the gateway and Orthanc processes, the ledger read
  back.
"""

from gateway.conformance.checks import CHECKS, Check
from gateway.conformance.command import run_conformance
from gateway.conformance.harness import ConformanceRun, conformance_run
from gateway.conformance.peers import CheckFailed

__all__ = ["CHECKS", "Check", "CheckFailed", "ConformanceRun", "conformance_run", "run_conformance"]
