"""The service works under the unit's ``MemoryDenyWriteExecute=yes`` and
``SystemCallFilter=``.

The unit forbids memory that is both writable and executable (a JIT, some ctypes or
libffi callbacks would need it) and every system call outside ``@system-service``
less ``@privileged`` and ``@resources``. systemd cannot run here, so the test puts
``dermgate run`` under the same kernel rules (:mod:`tests.support.sandbox`) and has
it do its work: a dermatoscope's captures wrapped, sent to Orthanc and committed,
the page and ``/metrics`` served, a clean stop.
"""

from __future__ import annotations

import mmap
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

from gateway.conformance.peers import DERMGATE
from gateway.demo.local_orthanc import OrthancProcess, free_port
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.paths import REPO_ROOT
from tests.support.sandbox import unit_rules, unit_syscalls
from tests.support.simulator import SimulatorProcess
from tests.support.state import states
from tests.support.waiting import wait_for

UNIT = REPO_ROOT / "image" / "dermgate.service"


class SandboxedGateway(GatewayProcess):
    """``dermgate run`` under the unit's memory and system-call rules."""

    def start(self) -> None:
        """Start the service with the rule in force from its first instruction."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in close_logs()
        self.proc = subprocess.Popen(
            [*DERMGATE, "run", "--config", str(self.config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=unit_rules(UNIT),
        )


def test_the_rules_are_in_force_in_such_a_child() -> None:
    """The seam itself: a W+X mapping, and a call of a denied group, are refused."""
    code = (
        "import mmap\n"
        f"mmap.mmap(-1, 4096, prot={mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC})\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=unit_rules(UNIT),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "Permission denied" in result.stderr
    allowed = unit_syscalls(UNIT)
    assert "sendto" in allowed  # the notify datagram
    assert "setrlimit" not in allowed  # ~@resources
    assert "chown" not in allowed  # ~@privileged
    renice = "import os\nos.setpriority(os.PRIO_PROCESS, 0, 5)\n"  # @resources
    result = subprocess.run(
        [sys.executable, "-c", renice],
        preexec_fn=unit_rules(UNIT),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "PermissionError: [Errno 1] Operation not permitted" in result.stderr


def test_captures_are_delivered_under_the_units_memory_and_syscall_rules(
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
        assert gateway.proc is not None
        status = Path(f"/proc/{gateway.proc.pid}/status").read_text()
        assert re.search(r"^Seccomp:\s+2$", status, re.M), status  # the filter is in force
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
