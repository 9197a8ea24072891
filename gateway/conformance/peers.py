"""The processes the kit runs around a driver: ``dermgate run``, a private Orthanc,
and what it reads back (the ledger, the configuration it wrote).

Everything runs as the installed DermGate would (``python -m gateway.cli.main`` from the
interpreter running the kit), on free loopback ports, under the kit's own working
directory; nothing here imports the test suite.
"""

from __future__ import annotations

import contextlib
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn

from gateway.demo.local_orthanc import OrthancProcess, free_port
from gateway.spool.ledger import SpoolEntry, captures_in_state, open_ledger
from gateway.spool.states import CaptureState

#: The command line of the installed ``dermgate`` (the interpreter running the kit).
DERMGATE = (sys.executable, "-m", "gateway.cli")

#: The gateway's AE title in the configuration the kit writes.
GATEWAY_AE = "DERMGATE"

#: The descriptor limit systemd gives a service (soft ``LimitNOFILE``): the kit runs
#: the gateway under it, as a box does.
SERVICE_NOFILE = 1024


class CheckFailed(AssertionError):
    """A conformance check failed; the message says what the driver got wrong."""


def fail(message: str) -> NoReturn:
    """Fail the running check with ``message``."""
    raise CheckFailed(message)


def expect(condition: object, message: str | Callable[[], str]) -> None:
    """Fail the running check with ``message`` unless ``condition`` holds."""
    if not condition:
        fail(message() if callable(message) else message)


def wait_until(predicate: Callable[[], Any], timeout: float, what: Callable[[], str]) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail after
    ``timeout`` seconds with "timed out … waiting for" ``what()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    fail(f"timed out after {timeout:.0f} s waiting for {what()}")


def start_pacs(workdir: Path) -> OrthancProcess:
    """A private Orthanc that knows the gateway's Storage Commitment listener."""
    server = OrthancProcess(
        workdir, modalities={"dermgate": (GATEWAY_AE, "127.0.0.1", free_port())}
    )
    server.start()
    return server


def write_gateway_config(
    path: Path, *, state_dir: Path, pacs: OrthancProcess, devices: str
) -> Path:
    """Write the kit's gateway configuration: one destination (``pacs``, with Storage
    Commitment, short retries) and the given ``[[devices]]`` sections."""
    listen_port = pacs.modalities["dermgate"][2]
    text = f"""
[gateway]
id = "conformance-01"
ae_title = "{GATEWAY_AE}"
listen_port = {listen_port}
listen_address = "127.0.0.1"
state_dir = "{state_dir}"
log_level = "DEBUG"

[context]
hold_unidentified = 0  # the kit's captures come without a patient session

[[destinations]]
name = "pacs"
kind = "dicom"
ae_title = "{pacs.aet}"
host = "127.0.0.1"
port = {pacs.dicom_port}
storage_commitment = true
commitment_timeout = 5.0
commitment_batch_delay = 0.2
retry_initial = 0.5
retry_max = 2.0
connect_timeout = 3
acse_timeout = 5
dimse_timeout = 10
network_timeout = 10
"""
    path.write_text(text + devices, encoding="utf-8")
    return path


def service_limits() -> None:
    """In the child, before exec: the descriptor limit of a systemd service."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (SERVICE_NOFILE, SERVICE_NOFILE))


@dataclass
class GatewayProcess:
    """``dermgate run --config FILE`` as a child process, under ``ulimit -n 1024``;
    every start appends to the same log."""

    config: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None
    _runs_before: int = 0

    def start(self) -> None:
        """Start the service."""
        self._runs_before = self.log().count(" running as ")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in close_logs()
        self.proc = subprocess.Popen(
            [*DERMGATE, "run", "--config", str(self.config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=service_limits,
        )

    def running(self) -> bool:
        """True while the process has not exited."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; the exit code (a gateway that does not stop fails the check)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # the service writes its thread stacks
            time.sleep(1)
            self.kill()
            fail(f"the gateway did not stop within {timeout:.0f} s:\n{self.log()[-6000:]}")
        self.close_logs()
        return code

    def kill(self) -> None:
        """SIGKILL (a crash or a power cut of the process)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
        self.close_logs()

    def wait_running(self, timeout: float = 60.0) -> None:
        """Wait until this start of the service reports that it is running."""
        wait_until(
            lambda: self.log().count(" running as ") > self._runs_before,
            timeout,
            lambda: f"the gateway to start\n{self.log()[-3000:]}",
        )

    def log(self) -> str:
        """Everything the service logged (every start)."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def close_logs(self) -> None:
        """Close the log file this process writes (the process keeps its own copy)."""
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One capture as the kit checks it (read from the gateway's ledger)."""

    spool_id: int
    device_capture_id: str
    state: str
    reason: str | None
    sop_instance_uid: str
    raw_sha256: str
    raw_name: str
    dicom_name: str | None

    @classmethod
    def of(cls, entry: SpoolEntry) -> LedgerRow:
        """The row of one spool entry."""
        return cls(
            spool_id=entry.spool_id,
            device_capture_id=entry.offer.device_capture_id,
            state=str(entry.state),
            reason=entry.reason,
            sop_instance_uid=entry.uids.sop_instance,
            raw_sha256=entry.raw_sha256,
            raw_name=entry.raw_name,
            dicom_name=entry.dicom_name,
        )


def ledger_rows(state_dir: Path) -> list[LedgerRow]:
    """Every capture in the gateway's ledger, in spool order; empty while there is no
    ledger yet. Read-only, through the spool's own queries."""
    path = state_dir / "ledger.sqlite3"
    if not path.exists():
        return []
    # One query per state, in the order captures move through them: a capture that
    # moves on during the scan is seen twice, and the later (newer) row wins.
    rows: dict[int, LedgerRow] = {}
    with (
        contextlib.suppress(sqlite3.Error),  # a ledger not created or migrated yet: nothing
        contextlib.closing(open_ledger(path, readonly=True)) as conn,
    ):
        for state in CaptureState:
            for entry in captures_in_state(conn, state, limit=1 << 30):
                rows[entry.spool_id] = LedgerRow.of(entry)
    return [rows[spool_id] for spool_id in sorted(rows)]


@dataclass
class Peers:
    """The kit's child processes for one check, so that all of them end with it."""

    pacs: OrthancProcess
    gateways: list[GatewayProcess] = field(default_factory=list)

    def stop(self) -> None:
        """Kill whatever still runs (the PACS and its storage are thrown away)."""
        for gateway in self.gateways:
            gateway.kill()
        self.pacs.kill()


@contextlib.contextmanager
def peers(workdir: Path) -> Iterator[Peers]:
    """A PACS under ``workdir/orthanc`` and the gateways started for one check."""
    started = Peers(start_pacs(workdir / "orthanc"))
    try:
        yield started
    finally:
        started.stop()
