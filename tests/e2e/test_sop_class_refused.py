"""A PACS that does not take a SOP class: the capture is refused at once, with a
reason a technician can act on, and sent after the PACS administrator adds the class.

``dermgate run`` with the RCM-1 confocal microscope simulator sends to a real
Orthanc that refuses the Confocal Microscopy classes (``UnknownSopClassAccepted``
false, as shipped); before, such a stack counted as an unreachable PACS and was
retried for ever.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gateway.demo.local_orthanc import OrthancProcess
from tests.support.gateway_process import GatewayProcess
from tests.support.spool import dermgate
from tests.support.state import delivery_rows, ledger_rows, states
from tests.support.usb_confocal import ConfocalSimulator, confocal_config
from tests.support.waiting import wait_for

REASON = (
    "the PACS does not accept Confocal Microscopy Image Storage; set fallback or ask the "
    "PACS administrator to accept 1.2.840.10008.5.1.4.1.1.77.1.8"
)


def test_a_stack_the_pacs_refuses_is_quarantined_with_the_reason_then_retried(
    tmp_path: Path,
    shipped_orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    confocal_sim: Callable[..., ConfocalSimulator],
) -> None:
    state_dir = tmp_path / "state"
    config = confocal_config(tmp_path, shipped_orthanc)
    sim = confocal_sim("--stacks", "1", "--frames", "3", "--size", "32x32")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0, gateway.log()
    wait_for(lambda: states(state_dir) == ["QUARANTINED"], 60, "the refusal")

    capture = ledger_rows(state_dir)[0]
    assert capture["reason"] == f"pacs refused it: {REASON}"
    delivery = delivery_rows(state_dir)[0]
    assert delivery["state"] == "FAILED"
    assert delivery["error_code"] == "not_accepted"
    assert delivery["attempts"] == 1, "refused at the first association, not retried"
    log = gateway.log()
    assert "destination pacs unavailable" not in log, "the PACS answered: it is reachable"
    assert "circuit open" not in log
    shown = dermgate("show", str(capture["id"]), config=config)
    assert shown.returncode == 0, shown.stderr
    assert REASON in shown.stdout
    assert shipped_orthanc.count_instances() == 0
    assert gateway.stop() == 0

    # The PACS administrator accepts the class; the technician sends the stack again.
    shipped_orthanc.stop()
    shipped_orthanc.extra["UnknownSopClassAccepted"] = True
    shipped_orthanc.start()
    retried = dermgate("retry", str(capture["id"]), config=config)
    assert retried.returncode == 0, retried.stderr
    gateway.start()
    wait_for(lambda: states(state_dir) == ["COMMITTED"], 90, "delivery after the fix")
    assert len(shipped_orthanc.find_instances(capture["sop_instance_uid"])) == 1
    assert gateway.stop() == 0
