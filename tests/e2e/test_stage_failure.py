"""A stage that fails stops the gateway with its cause in the log, said once.

A real ``dermgate run`` (under the service's descriptor limit, 1024) whose
commitment listener cannot listen because another program holds ``listen_port``:
the service exits 1 ("failed at run time") and the log names the stage, the
address and port, and the hint to look at ``listen_port``.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

from gateway.demo.local_orthanc import free_port
from tests.support.gateway_process import gateway_config, service_limits

HINT = "is [gateway] listen_port in use?"
_LEVEL = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def test_a_listen_port_in_use_is_named_in_the_log_once_and_the_service_exits_1(
    tmp_path: Path,
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        config = gateway_config(tmp_path, pacs_port=free_port(), listen_port=port)
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            preexec_fn=service_limits,
        )
    log = done.stdout + done.stderr
    assert done.returncode == 1, log
    # Log records (a DEBUG traceback may follow; its lines carry no level).
    records = [x for x in log.splitlines() if _LEVEL.search(x)]
    (line,) = [x for x in records if HINT in x]
    assert "CRITICAL" in line
    assert "commitment-listener" in line
    assert f"127.0.0.1:{port}" in line
    assert "OSError" in line  # the typed cause, not only its text
    last = records[-1]
    assert "commitment-listener" in last, log  # the last line says which stage stopped it
    assert "TaskGroup" not in log, log
