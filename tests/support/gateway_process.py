"""The gateway under test: its configuration and ``dermgate run`` as a child process.

``gateway_config`` writes a configuration whose PACS, device and ports a test chooses;
``GatewayProcess`` runs the service under a systemd-like descriptor limit; the
``gateway_factory`` fixture starts them and stops whatever is left at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.conformance.peers import SERVICE_NOFILE, service_limits
from gateway.conformance.peers import GatewayProcess as ServiceProcess
from gateway.demo.local_orthanc import OrthancProcess, free_port

__all__ = [
    "GATEWAY_AE",
    "SERVICE_NOFILE",
    "GatewayProcess",
    "gateway_config",
    "gateway_factory",
    "service_limits",
]

GATEWAY_AE = "DERMGATE"


def gateway_config(
    tmp_path: Path,
    *,
    pacs_port: int,
    pacs_ae: str = "ORTHANC",
    link: Path | None = None,
    retry_initial: float = 0.5,
    retry_max: float = 2.0,
    extra_destination: str = "",
    commit_via: OrthancProcess | None = None,
    listen_port: int | None = None,
    commitment_timeout: float = 20.0,
    devices: str | None = None,
    hold_unidentified: int = 0,
    extra_gateway: str = "",
    spool: str = "",
) -> Path:
    """Write a gateway configuration for a test; return its path.

    ``spool`` (lines of ``[spool]``) is written as that section when given;
    ``extra_gateway`` adds lines to ``[gateway]``; ``hold_unidentified`` is ``[context] hold_unidentified``: 0 (send captures
    without a patient session at once) unless a test holds them.

    ``devices`` replaces the default device (the serial dermatoscope on ``link``)
    with the given ``[[devices]]`` TOML sections.

    With ``commit_via`` (an Orthanc from the ``orthanc`` fixture) storage commitment
    is on and our listener uses the port that Orthanc knows us by.
    """
    link = link or tmp_path / "ttyDERM0"
    commit = commit_via is not None or listen_port is not None
    if commit_via is not None:
        listen_port = commit_via.modalities["dermgate"][2]
    text = f"""
[gateway]
id = "test-box-01"
ae_title = "{GATEWAY_AE}"
listen_port = {listen_port or free_port()}
listen_address = "127.0.0.1"
state_dir = "{tmp_path / "state"}"
log_level = "DEBUG"
{extra_gateway}

[context]
hold_unidentified = {hold_unidentified}

[[destinations]]
name = "pacs"
kind = "dicom"
ae_title = "{pacs_ae}"
host = "127.0.0.1"
port = {pacs_port}
storage_commitment = {"true" if commit else "false"}
commitment_timeout = {commitment_timeout}
commitment_batch_delay = 0.2
retry_initial = {retry_initial}
retry_max = {retry_max}
connect_timeout = 3
acse_timeout = 5
dimse_timeout = 10
network_timeout = 10
{extra_destination}
"""
    text += (
        devices
        if devices is not None
        else f"""
[[devices]]
driver = "serial-dermatoscope"
name = "scope"
port = "{link}"
stall_timeout = 5
reconnect_max = 1
"""
    )
    if spool:
        text += f"\n[spool]\n{spool}\n"
    path = tmp_path / "dermgate.toml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class GatewayProcess(ServiceProcess):
    """``dermgate run`` as the conformance kit runs it (under the descriptor limit a
    systemd service gets, :data:`SERVICE_NOFILE`), plus what only the tests measure."""

    def vm_hwm(self) -> int:
        """The process's peak resident memory (bytes)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[[Path], GatewayProcess]]:
    """Start gateways; whatever is still running at the end is stopped."""
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
