"""The conformance battery: every registered driver against its own simulator.

Each test runs the real ``dermgate run`` with storage commitment against a real
Orthanc (one per test) and the driver's simulator as a separate process, and is
parametrised over :data:`tests.conformance.registered.ADAPTERS`:

- connect: the adapter's configuration passes ``check-config`` and the driver
  reaches READY with the simulated device;
- capture: N captures reach Orthanc exactly once each, as the driver's SOP classes;
- unplug mid-transfer: the partial capture is neither acknowledged nor spooled, and
  after the replug it arrives exactly once;
- re-offer: a capture offered again after its ACK is acknowledged again, with no
  second object;
- garbage: garbage on the wire (or a junk entry in a folder, which must end in
  ``.refused/`` with a reason) crashes nothing, leaves nothing partial, and the
  captures still arrive;
- gateway restart: SIGKILLs of the gateway mid-stream lose and duplicate nothing.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.local_orthanc import OrthancProcess, free_port
from tests.conformance.kit import (
    DEVICE_NAME,
    ConformanceRun,
    Fault,
    conformance_run,
    distinct,
)
from tests.conformance.registered import ADAPTERS
from tests.support.gateway_process import GATEWAY_AE, GatewayProcess

TRANSFERRING = f"device {DEVICE_NAME}: TRANSFERRING"


@pytest.fixture
def pacs_orthanc(tmp_path: Path) -> Iterator[OrthancProcess]:
    """conftest's ``orthanc`` (it knows the gateway's commitment listener), but killed
    at the end: a graceful stop costs ~3 s a test and this PACS is thrown away."""
    server = OrthancProcess(
        tmp_path / "orthanc",
        modalities={"dermgate": (GATEWAY_AE, "127.0.0.1", free_port())},
    )
    server.start()
    yield server
    server.kill()


@pytest.fixture(params=ADAPTERS, ids=repr)
def run(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    pacs_orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
) -> Iterator[ConformanceRun]:
    with conformance_run(request.param, tmp_path, pacs_orthanc, gateway_factory) as harness:
        yield harness


def test_connect(run: ConformanceRun) -> None:
    check = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(run.config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    run.start_simulator(captures=1)
    gateway = run.start_gateway()
    run.wait_ready()
    run.assert_driver_never_crashed()
    assert gateway.stop() == 0
    assert "stopped" in run.gateway_log()


def test_capture(run: ConformanceRun) -> None:
    run.start_simulator()
    gateway = run.start_gateway()
    report = run.simulator_done()
    assert len(distinct(report.acknowledged)) == run.adapter.captures
    assert report.refused == (), "a clean capture is never refused"
    run.assert_delivered_exactly_once(report)
    run.assert_spool_clean()
    if run.adapter.drop_folder(run.workdir) is not None:
        assert run.refused_entries() == []
    run.assert_driver_never_crashed()
    assert gateway.stop() == 0


def test_unplug_mid_transfer(run: ConformanceRun) -> None:
    run.start_simulator(fault=Fault.UNPLUG)
    gateway = run.start_gateway()
    report = run.simulator_done()
    assert len(distinct(report.acknowledged)) == run.adapter.captures
    run.assert_delivered_exactly_once(report)
    run.assert_spool_clean()
    if run.adapter.unplug_evidence is not None:
        assert run.adapter.unplug_evidence in run.gateway_log(), (
            "no partial capture was discarded: did the unplug hit a transfer?"
        )
    if run.adapter.drop_folder(run.workdir) is not None:
        assert run.refused_entries() == [], "a half-copied entry was taken up and refused"
    run.assert_driver_never_crashed()
    assert gateway.stop() == 0


def test_reoffer_after_ack(run: ConformanceRun) -> None:
    run.start_simulator(fault=Fault.REOFFER)
    gateway = run.start_gateway()
    report = run.simulator_done()
    assert len(distinct(report.acknowledged)) == run.adapter.captures
    run.assert_delivered_exactly_once(report)
    assert "acknowledged again" in run.gateway_log(), "the re-offer was not recognised"
    run.assert_spool_clean()
    run.assert_driver_never_crashed()
    assert gateway.stop() == 0


def test_garbage(run: ConformanceRun) -> None:
    run.start_simulator(fault=Fault.GARBAGE)
    gateway = run.start_gateway()
    report = run.simulator_done()
    assert len(distinct(report.acknowledged)) == run.adapter.captures
    run.assert_delivered_exactly_once(report)
    run.assert_spool_clean()
    if run.adapter.drop_folder(run.workdir) is not None:
        refused = run.refused_entries()
        assert len(refused) == 1, f"the junk entry should be refused, found {refused}"
        reason = refused[0].with_name(refused[0].name + ".reason.txt")
        assert reason.read_text(encoding="utf-8").strip(), "a refused entry needs a reason"
    assert gateway.proc is not None
    assert gateway.proc.poll() is None, "the gateway died"
    run.assert_driver_never_crashed()
    assert gateway.stop() == 0


def test_gateway_restart(run: ConformanceRun) -> None:
    captures = run.adapter.captures + 1
    # The gateway waits for the device, not the other way round, and the device takes
    # its captures spaced out: however slowly the gateway starts, the first kill comes
    # while captures are still arriving (a device that took them all before the
    # gateway started would hand them over in one burst).
    run.adapter.prepare(run.workdir)
    first = run.start_gateway()
    first.wait_running()
    run.start_simulator(captures=captures, extra=run.adapter.paced_args)
    run.wait(lambda: len(run.rows()) >= 1, 60, "a first durable capture")
    first.kill()  # right after a commit: often before the device heard its ACK
    durable_at_first_kill = len(run.rows())
    transfers = run.gateway_log().count(TRANSFERRING)
    second = run.start_gateway()
    second.wait_running()
    # Kill the second run as soon as the driver starts a transfer (a staged partial
    # capture); if none starts within a few seconds, kill it all the same.
    deadline = time.monotonic() + 5
    while run.gateway_log().count(TRANSFERRING) == transfers and time.monotonic() < deadline:
        time.sleep(0.02)
    second.kill()
    final = run.start_gateway()
    final.wait_running()
    report = run.simulator_done()
    assert len(distinct(report.acknowledged)) == captures
    expected = sum(run.adapter.expected_objects(report).values())
    assert durable_at_first_kill < expected, "the first kill came after everything: no test"
    run.assert_delivered_exactly_once(report)
    run.assert_spool_clean()
    run.assert_driver_never_crashed()
    assert final.stop() == 0
