"""The service works under the unit's ``MemoryDenyWriteExecute=yes``.

The unit forbids memory that is both writable and executable (a JIT, some ctypes or
libffi callbacks would need it). systemd cannot run here, so the test puts
``dermgate run`` under the kernel's own form of that rule (``prctl(PR_SET_MDWE)``,
kept across ``exec``, which systemd ≥ 255 uses too) and has it do its work: a
dermatoscope's captures wrapped, sent to Orthanc and committed, the page and
``/metrics`` served.
"""

from __future__ import annotations

import ctypes
import mmap
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

from gateway.conformance.peers import DERMGATE, service_limits
from gateway.demo.local_orthanc import OrthancProcess, free_port
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.simulator import SimulatorProcess
from tests.support.state import states
from tests.support.waiting import wait_for

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1


def deny_write_execute() -> None:
    """In the child, before exec: the descriptor limit and no W+X memory, for good."""
    service_limits()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE) refused")


class SandboxedGateway(GatewayProcess):
    """``dermgate run`` under MemoryDenyWriteExecute."""

    def start(self) -> None:
        """Start the service with the rule in force from its first instruction."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in close_logs()
        self.proc = subprocess.Popen(
            [*DERMGATE, "run", "--config", str(self.config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=deny_write_execute,
        )


def test_the_rule_is_in_force_in_such_a_child() -> None:
    """The seam itself: a W+X mapping is refused in a child set up this way."""
    code = (
        "import mmap\n"
        f"mmap.mmap(-1, 4096, prot={mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC})\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=deny_write_execute,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "Permission denied" in result.stderr


def test_captures_are_delivered_under_memory_deny_write_execute(
    tmp_path: Path,
    orthanc: OrthancProcess,
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    web_port = free_port()
    config = gateway_config(tmp_path, pacs_port=orthanc.dicom_port, commit_via=orthanc)
    config.write_text(
        config.read_text() + f'\n[web]\nlisten = "127.0.0.1:{web_port}"\n', encoding="utf-8"
    )
    sim = simulator_factory("--captures", "2", "--interval", "0.5")
    gateway = SandboxedGateway(config, tmp_path / "gateway.log")
    gateway.start()
    try:
        gateway.wait_running(120)
        assert sim.wait(180) == 0, gateway.log()
        assert len(sim.result()["acknowledged"]) == 2
        state_dir = tmp_path / "state"
        wait_for(lambda: states(state_dir) == ["COMMITTED"] * 2, 120, "2 captures COMMITTED")
        assert orthanc.count_instances() == 2
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=30) as r:
            assert b"dermgate_" in r.read()
        assert gateway.stop() == 0
    finally:
        gateway.kill()
    assert "Traceback" not in gateway.log()
