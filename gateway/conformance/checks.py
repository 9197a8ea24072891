"""The conformance battery: what every driver must do with its own simulator.

Each check runs the real ``dermgate run`` with Storage Commitment against a private
Orthanc (a fresh one per check) and the driver's simulator as a separate process:

- ``connect``: the adapter's configuration passes ``check-config`` and the driver
  reaches READY with the simulated device;
- ``capture``: N captures reach Orthanc exactly once each, as the driver's SOP classes;
- ``unplug``: a capture cut off mid-transfer is neither acknowledged nor spooled, and
  after the replug it arrives exactly once;
- ``reoffer``: a capture offered again after its ACK is acknowledged again, with no
  second object;
- ``garbage``: garbage on the wire (or a junk entry in a folder, which must end in
  ``.refused/`` with a reason) crashes nothing, leaves nothing partial, and the
  captures still arrive;
- ``restart``: SIGKILLs of the gateway mid-stream lose and duplicate nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.conformance.harness import ConformanceRun, distinct
from gateway.conformance.peers import expect
from gateway.devices.simulator_hook import DEVICE_NAME, Fault

__all__ = ["CHECKS", "Check"]

#: A check: runs in a fresh harness, raises CheckFailed (an AssertionError) to fail.
Check = Callable[[ConformanceRun], None]

TRANSFERRING = f"device {DEVICE_NAME}: TRANSFERRING"


def check_connect(run: ConformanceRun) -> None:
    """The configuration is valid and the driver reaches READY; it stops cleanly."""
    checked = run.check_config()
    expect(checked.returncode == 0, f"check-config refused it:\n{checked.stdout}{checked.stderr}")
    run.start_simulator(captures=1)
    gateway = run.start_gateway()
    run.wait_ready()
    run.assert_driver_never_crashed()
    expect(gateway.stop() == 0, "the gateway did not exit 0 on SIGTERM")
    expect("stopped" in run.gateway_log(), "the gateway never said it stopped")


def check_capture(run: ConformanceRun) -> None:
    """Every capture reaches the PACS exactly once, as the driver's SOP classes."""
    run.start_simulator()
    gateway = run.start_gateway()
    report = run.simulator_done()
    _all_acknowledged(run, report.acknowledged, run.adapter.captures)
    expect(report.refused == (), f"a clean capture is never refused: {report.refused}")
    run.assert_delivered_exactly_once(report)
    run.assert_spool_clean()
    if run.adapter.drop_folder(run.device_dir) is not None:
        expect(run.refused_entries() == [], f"entries refused: {run.refused_entries()}")
    run.assert_driver_never_crashed()
    expect(gateway.stop() == 0, "the gateway did not exit 0 on SIGTERM")


def check_unplug(run: ConformanceRun) -> None:
    """A capture cut off mid-transfer is discarded, and arrives whole after the replug."""
    run.start_simulator(fault=Fault.UNPLUG)
    gateway = run.start_gateway()
    report = run.simulator_done()
    _all_acknowledged(run, report.acknowledged, run.adapter.captures)
    run.assert_delivered_exactly_once(report)
    run.assert_spool_clean()
    evidence = run.adapter.unplug_evidence
    if evidence is not None:
        expect(
            evidence in run.gateway_log(),
            f"no partial capture was discarded ({evidence!r} not logged): "
            "did the unplug hit a transfer?",
        )
    if run.adapter.drop_folder(run.device_dir) is not None:
        expect(run.refused_entries() == [], "a half-copied entry was taken up and refused")
    run.assert_driver_never_crashed()
    expect(gateway.stop() == 0, "the gateway did not exit 0 on SIGTERM")


def check_reoffer(run: ConformanceRun) -> None:
    """A capture offered again after its acknowledgement makes no second object."""
    run.start_simulator(fault=Fault.REOFFER)
    gateway = run.start_gateway()
    report = run.simulator_done()
    _all_acknowledged(run, report.acknowledged, run.adapter.captures)
    run.assert_delivered_exactly_once(report)
    expect(
        "acknowledged again" in run.gateway_log(),
        "the re-offer was not recognised (does the driver pass the device's own capture "
        "id, the same for every offer of one capture?)",
    )
    run.assert_spool_clean()
    run.assert_driver_never_crashed()
    expect(gateway.stop() == 0, "the gateway did not exit 0 on SIGTERM")


def check_garbage(run: ConformanceRun) -> None:
    """Garbage crashes nothing, leaves nothing partial, and the captures still arrive."""
    run.start_simulator(fault=Fault.GARBAGE)
    gateway = run.start_gateway()
    report = run.simulator_done()
    _all_acknowledged(run, report.acknowledged, run.adapter.captures)
    run.assert_delivered_exactly_once(report)
    run.assert_spool_clean()
    if run.adapter.drop_folder(run.device_dir) is not None:
        refused = run.refused_entries()
        expect(len(refused) == 1, f"the junk entry should be refused, found {refused}")
        reason = refused[0].with_name(refused[0].name + ".reason.txt")
        expect(reason.read_text(encoding="utf-8").strip(), "a refused entry needs a reason")
    expect(gateway.running(), "the gateway died")
    run.assert_driver_never_crashed()
    expect(gateway.stop() == 0, "the gateway did not exit 0 on SIGTERM")


def check_restart(run: ConformanceRun) -> None:
    """SIGKILLs of the gateway mid-stream lose nothing and duplicate nothing."""
    captures = run.adapter.captures + 1
    # The gateway waits for the device, not the other way round, and the device takes
    # its captures spaced out: however slowly the gateway starts, the first kill comes
    # while captures are still arriving (a device that took them all before the
    # gateway started would hand them over in one burst).
    run.adapter.prepare(run.device_dir)
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
    _all_acknowledged(run, report.acknowledged, captures)
    expected = sum(run.adapter.expected_objects(report).values())
    expect(
        durable_at_first_kill < expected,
        "the first kill came after everything was durable: nothing was tested "
        "(pace the simulator with the adapter's paced_args)",
    )
    run.assert_delivered_exactly_once(report)
    run.assert_spool_clean()
    run.assert_driver_never_crashed()
    expect(final.stop() == 0, "the gateway did not exit 0 on SIGTERM")


def _all_acknowledged(run: ConformanceRun, acknowledged: tuple[str, ...], wanted: int) -> None:
    got = len(distinct(acknowledged))
    expect(
        got == wanted,
        lambda: (
            f"the simulator reports {got} acknowledged capture(s), expected {wanted}\n"
            f"{run.diagnostics()}"
        ),
    )


#: Every check by name, in the order ``dermgate conformance`` runs them.
CHECKS: dict[str, Check] = {
    "connect": check_connect,
    "capture": check_capture,
    "unplug": check_unplug,
    "reoffer": check_reoffer,
    "garbage": check_garbage,
    "restart": check_restart,
}
