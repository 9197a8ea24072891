"""``dermgate run`` as systemd runs it, started by a fixture.

Every :class:`tests.conftest.GatewayProcess` runs under the unit's descriptor limit
(``ulimit -n 1024``, :func:`tests.conftest.service_limits`); the ``service`` fixture
starts such gateways and kills whatever is still running at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import GatewayProcess


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Callable[[Path], GatewayProcess]]:
    """Start gateways; killed at the end if still running."""
    started: list[GatewayProcess] = []

    def start(config: Path) -> GatewayProcess:
        gw = GatewayProcess(config, tmp_path / "gateway.log")
        gw.start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        if gw.proc is not None and gw.proc.poll() is None:
            gw.proc.kill()
            gw.proc.wait()
        gw.close_logs()
