"""The busy lock a running service holds while work is in flight.

``dermgate run`` under systemd gets ``RUNTIME_DIRECTORY``; while a capture arrives,
is wrapped or is being sent it holds a shared ``flock`` on ``busy.lock`` there, which
``dermgate-update apply`` (and BOX.md's ``flock -x -w`` line) waits for. Checked with
util-linux's ``flock`` against a real gateway, the serial simulator and a PACS that
keeps the association open for seconds per C-STORE.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.peers import MisbehavingPacs
from tests.support.simulator import SimulatorProcess
from tests.support.state import states
from tests.support.waiting import wait_for


def _held(lock: Path) -> bool:
    """Whether someone holds the lock (an exclusive try fails at once)."""
    done = subprocess.run(["flock", "-x", "-n", str(lock), "true"], check=False)
    return done.returncode != 0


def test_service_holds_the_busy_lock_only_while_a_capture_is_in_flight(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(run_dir))
    lock = run_dir / "busy.lock"
    pacs.script = ["silence"]  # the first C-STORE is answered after 4 s
    pacs.start()
    config = gateway_config(tmp_path, pacs_port=pacs.port, pacs_ae="MISBEHAVE")
    gateway = gateway_factory(config)
    sim = simulator_factory("--captures", "1")
    wait_for(lambda: lock.exists() and _held(lock), 120, "the lock held while busy")
    assert sim.wait(120) == 0
    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["SENT"], 120, "delivery")
    wait_for(lambda: not _held(lock), 60, "the lock free once idle")
    assert gateway.stop() == 0
