"""``dermgate run`` as systemd runs it: under the unit's descriptor limit.

:class:`ServiceProcess` is :class:`tests.conftest.GatewayProcess` started with
``ulimit -n 1024`` (:func:`service_limits`); the ``service`` fixture starts such
gateways and kills whatever is still running at the end.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import GatewayProcess

#: The descriptor limit systemd gives a service (LimitNOFILE's soft default).
SERVICE_NOFILE = 1024


def service_limits() -> None:
    """``preexec_fn`` for a child process: the service's descriptor limit."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (SERVICE_NOFILE, SERVICE_NOFILE))


class ServiceProcess(GatewayProcess):
    """``dermgate run`` under the service's descriptor limit (``LimitNOFILE``)."""

    def start(self) -> None:
        """Start the service with ``ulimit -n 1024``."""
        self._runs_before = self.log().count(" running as ") if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115
        self._logs.append(log)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=service_limits,
        )


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Callable[[Path], ServiceProcess]]:
    """Start gateways under the service limits; killed at the end if still running."""
    started: list[ServiceProcess] = []

    def start(config: Path) -> ServiceProcess:
        gw = ServiceProcess(config, tmp_path / "gateway.log")
        gw.start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        if gw.proc is not None and gw.proc.poll() is None:
            gw.proc.kill()
            gw.proc.wait()
        gw.close_logs()
