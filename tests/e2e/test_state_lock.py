"""One service per state folder: ``dermgate run`` holds ``STATE_DIR/dermgate.lock``.

A second ``dermgate run`` on the same ``state_dir`` must leave at once, before it
reads or changes anything: its start-up reconciliation, racing the first service's
intake, would otherwise move acknowledged captures to ``orphans/`` and quarantine
them as "raw capture file missing".
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.peers import MisbehavingPacs
from tests.support.simulator import SimulatorProcess
from tests.support.state import ledger_rows, states
from tests.support.waiting import wait_for

CAPTURES = 8


def test_a_second_service_on_the_same_state_dir_leaves_at_once(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    pacs.start()
    config = gateway_config(tmp_path, pacs_port=pacs.port)
    state_dir = tmp_path / "state"
    sim = simulator_factory("--captures", str(CAPTURES), "--interval", "0.5")
    first = gateway_factory(config)
    first.wait_running()
    assert first.proc is not None
    wait_for(lambda: len(ledger_rows(state_dir)) >= 1, 120, "the first capture to arrive")

    # Captures keep arriving while a second service is started on the same state.
    started = time.monotonic()
    second = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = second.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        second.kill()
        second.communicate()
        raise AssertionError(
            "the second `dermgate run` did not exit: it runs beside the first"
        ) from None
    elapsed = time.monotonic() - started

    assert second.returncode == 1, out + err
    assert elapsed < 10, f"the second service took {elapsed:.1f} s to give up"
    lock = state_dir / "dermgate.lock"
    assert str(lock) in err, err
    assert f"PID {first.proc.pid}" in err, err
    assert "Traceback" not in out + err
    assert lock.read_text(encoding="ascii").strip() == str(first.proc.pid)

    assert sim.wait(180) == 0, first.log()[-4000:]
    assert len(sim.result()["acknowledged"]) == CAPTURES
    wait_for(lambda: states(state_dir) == ["SENT"] * CAPTURES, 60, f"{CAPTURES} captures SENT")
    assert not (state_dir / "spool" / "orphans").exists(), "nothing was moved to orphans/"
    assert sorted(pacs.received) == sorted(r["sop_instance_uid"] for r in ledger_rows(state_dir))
    assert "reconciled" not in first.log()
    assert first.stop() == 0


def test_read_only_spool_commands_work_beside_the_service(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    pacs.start()
    config = gateway_config(tmp_path, pacs_port=pacs.port)
    sim = simulator_factory("--captures", "1", "--interval", "0.2")
    gateway = gateway_factory(config)
    gateway.wait_running()
    assert sim.wait(120) == 0, gateway.log()[-4000:]
    wait_for(lambda: states(tmp_path / "state") == ["SENT"], 60, "the capture SENT")

    for action in (["list"], ["show", "1"]):
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "spool", *action, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "SENT" in result.stdout
    assert gateway.stop() == 0
