"""The harness one check runs in: a driver's adapter, its simulator, the gateway
(restartable) and a PACS, with the assertions the checks share.

Rules the harness holds every driver to (the decisions, in plain words):

- "Exactly once" is counted in Orthanc, never read from C-STORE statuses (a
  duplicate is invisible there): every ledger row's SOP Instance UID is found once,
  and Orthanc holds exactly as many instances, of exactly the SOP classes, as the
  simulator's acknowledged captures should yield.
- The simulator's ``--report`` is the device's truth: its acknowledged ids are what
  must not be lost.
- The spooled bytes are the device's, compared by SHA-256.
- Nothing half-received stays in the spool: ``staging/`` is empty and ``raw/`` and
  ``dicom/`` hold only files the ledger names.
- A driver never crashes: the supervisor restarting or quarantining the device's
  driver fails the check.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.conformance.peers import (
    DERMGATE,
    GatewayProcess,
    LedgerRow,
    Peers,
    expect,
    fail,
    ledger_rows,
    peers,
    wait_until,
    write_gateway_config,
)
from gateway.demo.local_orthanc import OrthancProcess
from gateway.devices.simulator_hook import (
    DEVICE_NAME,
    Fault,
    ReportError,
    SimulatorAdapter,
    SimulatorReport,
)

#: Ledger state that means "in the PACS, and the PACS said it keeps it".
CONFIRMED = "COMMITTED"


@dataclass
class SimulatorRun:
    """One ``dermgate simulate DRIVER`` child process."""

    adapter: SimulatorAdapter
    proc: subprocess.Popen[bytes]
    report_path: Path
    log_path: Path

    def report(self) -> SimulatorReport:
        """The simulator's current report (a report outside the contract fails)."""
        try:
            data = json.loads(self.report_path.read_text(encoding="utf-8"))
            return self.adapter.read_report(data)
        except (OSError, ValueError) as err:  # ReportError and JSONDecodeError included
            kind = "breaks the kit contract" if isinstance(err, ReportError) else "is unreadable"
            fail(f"the simulator's report {kind}: {err}")

    def log(self) -> str:
        """What the simulator printed."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        """Terminate the simulator if it still runs."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class ConformanceRun:
    """One check's world: the driver's adapter, one PACS, gateways, one simulator."""

    driver: str
    adapter: SimulatorAdapter
    workdir: Path
    peers: Peers
    seed: int = 7
    simulator: SimulatorRun | None = None
    gateways: list[GatewayProcess] = field(default_factory=list)

    @property
    def pacs(self) -> OrthancProcess:
        """The PACS (a private Orthanc)."""
        return self.peers.pacs

    @property
    def device_dir(self) -> Path:
        """Where the simulated device lives (its pty link, socket or folder)."""
        return self.workdir / "device"

    @property
    def state_dir(self) -> Path:
        """The gateway's state directory."""
        return self.workdir / "state"

    @property
    def config(self) -> Path:
        """The gateway configuration (written once)."""
        path = self.workdir / "dermgate.toml"
        if not path.exists():
            devices = self.adapter.device_toml(self.driver, self.device_dir)
            write_gateway_config(path, state_dir=self.state_dir, pacs=self.pacs, devices=devices)
        return path

    # -- processes -----------------------------------------------------------------

    def start_simulator(
        self,
        *,
        captures: int | None = None,
        fault: Fault | None = None,
        timeout: float = 150,
        extra: Sequence[str] = (),
    ) -> SimulatorRun:
        """Start the simulator and wait until its device can be found."""
        self.adapter.prepare(self.device_dir)
        report = self.workdir / "simulator-report.json"
        log_path = self.workdir / "simulator.log"
        count = captures if captures is not None else self.adapter.captures
        cmd = [
            *DERMGATE,
            "simulate",
            self.driver,
            *self.adapter.simulator_args(self.device_dir, captures=count),
            *("--report", str(report), "--seed", str(self.seed), "--timeout", str(timeout)),
            *(self.adapter.fault_args(fault) if fault is not None else []),
            *extra,
        ]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        sim = self.simulator = SimulatorRun(self.adapter, proc, report, log_path)
        self.wait(
            lambda: self.adapter.device_present(self.device_dir) or proc.poll() is not None,
            30,
            "the simulated device to appear",
        )
        expect(proc.poll() is None, lambda: f"the simulator exited at once:\n{sim.log()}")
        return sim

    def start_gateway(self) -> GatewayProcess:
        """Start ``dermgate run`` (again) with this run's configuration."""
        gateway = GatewayProcess(self.config, self.workdir / "gateway.log")
        self.peers.gateways.append(gateway)
        self.gateways.append(gateway)
        gateway.start()
        return gateway

    def check_config(self) -> subprocess.CompletedProcess[str]:
        """``dermgate check-config`` on this run's configuration."""
        return subprocess.run(
            [*DERMGATE, "check-config", str(self.config)],
            capture_output=True,
            text=True,
            check=False,
        )

    def simulator_done(self, timeout: float = 120) -> SimulatorReport:
        """Wait for the simulator to exit 0 (everything acknowledged); its report."""
        sim = self.simulator
        assert sim is not None
        try:
            code = sim.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            fail(f"simulator still running after {timeout:.0f} s\n{self.diagnostics()}")
        expect(code == 0, lambda: f"simulator exited {code}\n{self.diagnostics()}")
        return sim.report()

    def stop(self) -> None:
        """Stop the simulator and kill every gateway still running."""
        if self.simulator is not None:
            self.simulator.stop()
        for gateway in self.gateways:
            gateway.kill()

    # -- what to look at -------------------------------------------------------------

    def gateway_log(self) -> str:
        """Everything every start of the gateway logged."""
        path = self.workdir / "gateway.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def diagnostics(self) -> str:
        """The tails of both logs and the ledger's states, for a failure message."""
        sim = self.simulator.log()[-3000:] if self.simulator else ""
        rows = [(r.device_capture_id, r.state, r.reason) for r in self.rows()]
        return (
            f"--- ledger: {rows}\n--- simulator log (tail):\n{sim}\n"
            f"--- gateway log (tail):\n{self.gateway_log()[-5000:]}"
        )

    def rows(self) -> list[LedgerRow]:
        """The ledger's capture rows."""
        return ledger_rows(self.state_dir)

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll ``predicate``; on timeout fail with the logs and ledger attached."""
        return wait_until(predicate, timeout, lambda: f"{what}\n{self.diagnostics()}")

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until the driver reports READY for the device."""
        pattern = re.compile(rf"device {re.escape(DEVICE_NAME)}: READY\b")
        self.wait(lambda: pattern.search(self.gateway_log()), timeout, "the driver to be READY")

    # -- the assertions the checks share -------------------------------------------------

    def assert_delivered_exactly_once(self, report: SimulatorReport, timeout: float = 60) -> None:
        """Every acknowledged capture is in Orthanc exactly once, as the right SOP classes.

        Waits until the ledger holds as many rows as the captures must yield and all
        are COMMITTED (Orthanc confirmed them by Storage Commitment), then counts in
        Orthanc by SOP Instance UID and in total.
        """
        expected = self.adapter.expected_objects(report)
        total = sum(expected.values())
        expect(total > 0, f"nothing acknowledged: {report}")

        def settled() -> bool:
            rows = self.rows()
            return len(rows) >= total and all(r.state == CONFIRMED for r in rows)

        self.wait(settled, timeout, f"{total} object(s) COMMITTED")
        rows = self.rows()
        expect(
            len(rows) == total,
            lambda: (
                f"{len(rows)} spooled objects for {len(set(report.acknowledged))} "
                f"acknowledged captures; expected {total}\n{self.diagnostics()}"
            ),
        )
        stored: Counter[str] = Counter()
        for row in rows:
            found = self.pacs.find_instances(row.sop_instance_uid)
            expect(len(found) == 1, f"{row.sop_instance_uid} is in Orthanc {len(found)} times")
            stored[self.sop_class_in_orthanc(found[0])] += 1
        expect(stored == expected, f"SOP classes in Orthanc {dict(stored)} != {dict(expected)}")
        expect(self.pacs.count_instances() == total, "an object stored under a second UID")
        self.assert_content_is_what_the_device_sent(report)

    def assert_content_is_what_the_device_sent(self, report: SimulatorReport) -> None:
        """The spooled bytes are exactly the device's: compared by SHA-256 with what the
        simulator reports, or with the files of a drop folder's ``.processed/``. A
        half-sent capture (before an unplug, a kill) would show here."""
        sent = self.adapter.sent_digests(report, self.device_dir)
        if sent is None:
            return
        spooled = {r.raw_sha256 for r in self.rows()}
        expect(
            spooled == sent,
            f"spooled content differs from the device's: {len(spooled - sent)} spooled "
            f"object(s) the device never sent whole, {len(sent - spooled)} missing",
        )

    def sop_class_in_orthanc(self, orthanc_id: str) -> str:
        """The SOP Class UID of one stored instance, as Orthanc read it."""
        value = self.pacs.rest("GET", f"/instances/{orthanc_id}/content/0008,0016")
        text = value.decode("ascii") if isinstance(value, bytes) else str(value)
        return text.strip("\x00 ")

    def assert_spool_clean(self) -> None:
        """Nothing half-received stays: staging is empty; raw/ and dicom/ hold only
        files the ledger names."""
        spool = self.state_dir / "spool"
        staging = sorted(p.name for p in (spool / "staging").iterdir())
        expect(staging == [], f"partial captures left in staging/: {staging}")
        rows = self.rows()
        named = {r.raw_name for r in rows} | {r.dicom_name for r in rows if r.dicom_name}
        for folder in ("raw", "dicom"):
            unknown = sorted(p.name for p in (spool / folder).iterdir() if p.name not in named)
            expect(unknown == [], f"files in {folder}/ that no capture owns: {unknown}")

    def assert_driver_never_crashed(self) -> None:
        """The supervisor never had to restart or quarantine the device's driver."""
        died = re.compile(
            rf"ERROR\s.*device {re.escape(DEVICE_NAME)}: driver "  # crashed, returned, hung
            rf"|device {re.escape(DEVICE_NAME)}: QUARANTINED"
        )
        lines = [line for line in self.gateway_log().splitlines() if died.search(line)]
        expect(lines == [], lambda: f"the driver died: {lines}\n{self.diagnostics()}")

    def refused_entries(self) -> list[Path]:
        """Entries a folder driver set aside in ``.refused/`` (reason files excluded)."""
        folder = self.adapter.drop_folder(self.device_dir)
        assert folder is not None
        refused = folder / ".refused"
        if not refused.is_dir():
            return []
        return sorted(p for p in refused.iterdir() if not p.name.endswith(".reason.txt"))


@contextlib.contextmanager
def conformance_run(
    driver: str, adapter: SimulatorAdapter, workdir: Path
) -> Iterator[ConformanceRun]:
    """One check's harness under ``workdir``: a fresh PACS; at the end, whatever
    happened, the simulator, the gateways and the PACS are stopped."""
    workdir.mkdir(parents=True, exist_ok=True)
    with peers(workdir) as started:
        run = ConformanceRun(driver, adapter, workdir, started)
        try:
            yield run
        finally:
            run.stop()


def distinct(ids: Sequence[str]) -> list[str]:
    """``ids`` without repeats, in first-seen order."""
    return list(dict.fromkeys(ids))
