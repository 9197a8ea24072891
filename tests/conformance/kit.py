"""The driver conformance kit: the adapter a driver writes, and the harness that runs it.

Every driver runs one battery (``test_conformance.py``) against its own simulator,
through the real ``dermgate run`` and a real Orthanc. What differs between drivers
is captured by a :class:`DeviceAdapter`: how to start the simulator, the
``[[devices]]`` TOML that points the gateway at it, which SOP classes one
acknowledged capture becomes (a 3D export becomes several objects), and how to tell
that the device is there. A new driver inherits the whole battery by writing one
adapter module and listing it in ``registered.py``.

Rules the harness holds every driver to (the decisions, in plain words):

- "Exactly once" is counted in Orthanc, never read from C-STORE statuses (a
  duplicate is invisible there, DESIGN §6): every ledger row's SOP Instance UID is
  found once, and Orthanc holds exactly as many instances, of exactly the SOP
  classes, as the simulator's acknowledged captures should yield.
- The simulator's ``--report`` is the device's truth: its acknowledged ids are what
  must not be lost. Reports follow the kit contract (``acknowledged``, ``refused``,
  ``offered``); the serial simulator's older form (objects with ``capture_id``) is
  read too.
- Nothing half-received stays in the spool: ``staging/`` is empty and ``raw/`` and
  ``dicom/`` hold only files the ledger names.
- A driver never crashes: the supervisor's "crashed; restarting it" for the device
  task fails any test.
- Fault injection uses the kit's simulator flags (``--unplug-mid-transfer``,
  ``--garbage``, ``--reoffer``); an adapter may map them onto its simulator's own.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from gateway.local_orthanc import OrthancProcess
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.state import ledger_rows

#: The name every adapter's device gets in the gateway configuration.
DEVICE_NAME = "dev"

#: Ledger states that mean "in the PACS, and the PACS said it keeps it".
CONFIRMED = "COMMITTED"


class Fault(enum.Enum):
    """A fault the kit asks a simulator to inject (the kit contract's flags)."""

    UNPLUG = "--unplug-mid-transfer"
    GARBAGE = "--garbage"
    REOFFER = "--reoffer"


@dataclass(frozen=True, slots=True)
class SimulatorReport:
    """What the simulated device says happened: its own capture ids."""

    acknowledged: tuple[str, ...]
    refused: tuple[tuple[str, str], ...]
    offered: int | None
    #: capture id -> SHA-256 of its content, where the simulator reports it.
    sha256: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> SimulatorReport:
        """Read a report; fail the test (naming the field) if it breaks the contract."""
        assert isinstance(data, dict), f"report is not a JSON object: {data!r}"
        assert isinstance(data.get("acknowledged"), list), "report lacks an 'acknowledged' list"
        acknowledged = tuple(_capture_id(item) for item in data["acknowledged"])
        refused = tuple(
            (_capture_id(item), str(item.get("reason", "")) if isinstance(item, dict) else "")
            for item in data.get("refused", [])
        )
        offered = data.get("offered")
        digests = {
            _capture_id(item): str(item["sha256"])
            for item in data["acknowledged"]
            if isinstance(item, dict) and isinstance(item.get("sha256"), str)
        }
        return cls(acknowledged, refused, offered if isinstance(offered, int) else None, digests)


def _capture_id(item: Any) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for key in ("id", "capture_id"):
            if isinstance(item.get(key), str):
                return str(item[key])
    pytest.fail(f"simulator report names a capture neither as a string nor by 'id': {item!r}")


class DeviceAdapter(ABC):
    """What the kit needs to know about one driver and its simulator.

    Subclasses set the ClassVars and write :meth:`device_toml` and
    :meth:`simulator_args`; the rest has defaults that fit most drivers.
    """

    #: The driver's id in the ``dermgate.drivers`` entry-point group.
    driver: ClassVar[str]
    #: SOP Class UID -> how many objects of that class one acknowledged capture yields.
    objects_per_capture: ClassVar[Mapping[str, int]]
    #: How many captures the capture/fault tests ask for (keep CI short).
    captures: ClassVar[int] = 3
    #: A gateway log substring that proves the unplug hit a transfer, if the device
    #: class can promise one (a folder driver may never have seen the half copy).
    unplug_evidence: ClassVar[str | None] = None
    #: Simulator flags that space captures out (appended last, so they win) for the
    #: restart test, which must kill the gateway while captures are still coming. A
    #: device that waits for each acknowledgement is paced by the gateway already.
    paced_args: ClassVar[tuple[str, ...]] = ()
    #: Files of a processed folder entry that become no object (e.g. a manifest).
    not_objects: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def device_toml(self, workdir: Path) -> str:
        """The ``[[devices]]`` section for a device named :data:`DEVICE_NAME`."""

    @abstractmethod
    def simulator_args(self, workdir: Path, *, captures: int) -> list[str]:
        """Simulator arguments besides ``--report``, ``--seed``, ``--timeout`` and faults."""

    def read_report(self, data: Any) -> SimulatorReport:
        """The simulator's parsed ``--report`` JSON as a :class:`SimulatorReport`."""
        return SimulatorReport.from_json(data)

    def fault_args(self, fault: Fault) -> list[str]:
        """The simulator flags that inject ``fault`` (the kit contract's by default)."""
        return [fault.value]

    def prepare(self, workdir: Path) -> None:
        """Create whatever must exist before the simulator and gateway start."""
        workdir.mkdir(parents=True, exist_ok=True)

    def device_present(self, workdir: Path) -> bool:
        """True once the simulated device can be found (a pty link, a socket)."""
        return True

    def drop_folder(self, workdir: Path) -> Path | None:
        """The watched folder of a folder driver; None for a device on a wire."""
        return None

    def sent_digests(self, report: SimulatorReport, workdir: Path) -> set[str] | None:
        """SHA-256 of each object's bytes as the device holds them, for the acknowledged
        captures: the report's digests, else every file of the drop folder's
        ``.processed/`` (except :attr:`not_objects`); None if neither is known."""
        acknowledged = set(report.acknowledged)
        if acknowledged and acknowledged <= set(report.sha256):
            return {report.sha256[capture_id] for capture_id in acknowledged}
        folder = self.drop_folder(workdir)
        if folder is None:
            return None
        files = (p for p in (folder / ".processed").rglob("*") if p.is_file())
        return {_sha256(p) for p in files if p.name not in self.not_objects}

    def expected_objects(self, report: SimulatorReport) -> Counter[str]:
        """SOP Class UID -> number of objects the acknowledged captures must yield."""
        expected: Counter[str] = Counter()
        for _ in set(report.acknowledged):
            expected.update(self.objects_per_capture)
        return expected

    def __repr__(self) -> str:
        return self.driver


@dataclass
class SimulatorRun:
    """One ``dermgate simulate DRIVER`` child process."""

    adapter: DeviceAdapter
    proc: subprocess.Popen[bytes]
    report_path: Path
    log_path: Path

    def report(self) -> SimulatorReport:
        """The simulator's current report."""
        data = json.loads(self.report_path.read_text(encoding="utf-8"))
        return self.adapter.read_report(data)

    def log(self) -> str:
        """What the simulator printed."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@dataclass
class ConformanceRun:
    """The harness: one adapter, one Orthanc, one gateway (restartable), one simulator."""

    adapter: DeviceAdapter
    tmp_path: Path
    orthanc: OrthancProcess
    gateway_factory: Callable[[Path], GatewayProcess]
    seed: int = 7
    simulator: SimulatorRun | None = None
    gateways: list[GatewayProcess] = field(default_factory=list)

    @property
    def workdir(self) -> Path:
        """Where the simulated device lives (its pty link, socket or folder)."""
        return self.tmp_path / "device"

    @property
    def state_dir(self) -> Path:
        """The gateway's state directory."""
        return self.tmp_path / "state"

    @property
    def config(self) -> Path:
        """The gateway configuration (written once)."""
        path = self.tmp_path / "dermgate.toml"
        if not path.exists():
            gateway_config(
                self.tmp_path,
                pacs_port=self.orthanc.dicom_port,
                commit_via=self.orthanc,
                commitment_timeout=5.0,
                devices=self.adapter.device_toml(self.workdir),
            )
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
        self.adapter.prepare(self.workdir)
        report = self.tmp_path / "simulator-report.json"
        log_path = self.tmp_path / "simulator.log"
        cmd = [
            sys.executable,
            "-m",
            "gateway.cli",
            "simulate",
            self.adapter.driver,
            *self.adapter.simulator_args(
                self.workdir, captures=captures if captures is not None else self.adapter.captures
            ),
            "--report",
            str(report),
            "--seed",
            str(self.seed),
            "--timeout",
            str(timeout),
            *(self.adapter.fault_args(fault) if fault is not None else []),
            *extra,
        ]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        self.simulator = SimulatorRun(self.adapter, proc, report, log_path)
        self.wait(
            lambda: self.adapter.device_present(self.workdir) or proc.poll() is not None,
            30,
            "the simulated device to appear",
        )
        assert proc.poll() is None, f"the simulator exited at once:\n{self.simulator.log()}"
        return self.simulator

    def start_gateway(self) -> GatewayProcess:
        """Start ``dermgate run`` (again) with this run's configuration."""
        gateway = self.gateway_factory(self.config)
        self.gateways.append(gateway)
        return gateway

    def simulator_done(self, timeout: float = 120) -> SimulatorReport:
        """Wait for the simulator to exit 0 (everything acknowledged); its report."""
        sim = self.simulator
        assert sim is not None
        try:
            code = sim.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"simulator still running after {timeout:.0f} s\n{self.diagnostics()}")
        assert code == 0, f"simulator exited {code}\n{self.diagnostics()}"
        return sim.report()

    def stop(self) -> None:
        """Stop whatever still runs (called by the fixture)."""
        if self.simulator is not None and self.simulator.proc.poll() is None:
            self.simulator.proc.terminate()
            try:
                self.simulator.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.simulator.proc.kill()
                self.simulator.proc.wait()

    # -- what to look at -------------------------------------------------------------

    def gateway_log(self) -> str:
        """Everything every start of the gateway logged."""
        path = self.tmp_path / "gateway.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def diagnostics(self) -> str:
        """The tails of both logs and the ledger's states, for a failure message."""
        sim = self.simulator.log()[-3000:] if self.simulator else ""
        rows = [(r["device_capture_id"], r["state"], r["reason"]) for r in self.rows()]
        return (
            f"--- ledger: {rows}\n--- simulator log (tail):\n{sim}\n"
            f"--- gateway log (tail):\n{self.gateway_log()[-5000:]}"
        )

    def rows(self) -> list[Any]:
        """The ledger's capture rows."""
        return ledger_rows(self.state_dir)

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll ``predicate``; on timeout fail with the logs and ledger attached."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{self.diagnostics()}")

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until the driver reports READY for the device."""
        pattern = re.compile(rf"device {re.escape(DEVICE_NAME)}: READY\b")
        self.wait(lambda: pattern.search(self.gateway_log()), timeout, "the driver to be READY")

    # -- the checks --------------------------------------------------------------------

    def assert_delivered_exactly_once(self, report: SimulatorReport, timeout: float = 60) -> None:
        """Every acknowledged capture is in Orthanc exactly once, as the right SOP classes.

        Waits until the ledger holds as many rows as the captures must yield and all
        are COMMITTED (Orthanc confirmed them by Storage Commitment), then counts in
        Orthanc by SOP Instance UID and in total.
        """
        expected = self.adapter.expected_objects(report)
        total = sum(expected.values())
        assert total > 0, f"nothing acknowledged: {report}"

        def settled() -> bool:
            rows = self.rows()
            return len(rows) >= total and all(r["state"] == CONFIRMED for r in rows)

        self.wait(settled, timeout, f"{total} object(s) COMMITTED")
        rows = self.rows()
        assert len(rows) == total, (
            f"{len(rows)} spooled objects for {len(set(report.acknowledged))} acknowledged "
            f"captures; expected {total}\n{self.diagnostics()}"
        )
        stored: Counter[str] = Counter()
        for row in rows:
            uid = row["sop_instance_uid"]
            found = self.orthanc.find_instances(uid)
            assert len(found) == 1, f"{uid} is in Orthanc {len(found)} times"
            stored[self.sop_class_in_orthanc(found[0])] += 1
        assert stored == expected, f"SOP classes in Orthanc {dict(stored)} != {dict(expected)}"
        assert self.orthanc.count_instances() == total, "an object stored under a second UID"
        self.assert_content_is_what_the_device_sent(report)

    def assert_content_is_what_the_device_sent(self, report: SimulatorReport) -> None:
        """The spooled bytes are exactly the device's: compared by SHA-256 with what the
        simulator reports, or with the files of a drop folder's ``.processed/``. A
        half-sent capture (before an unplug, a kill) would show here."""
        sent = self.adapter.sent_digests(report, self.workdir)
        if sent is None:
            return
        spooled = {str(r["raw_sha256"]) for r in self.rows()}
        assert spooled == sent, (
            f"spooled content differs from the device's: {len(spooled - sent)} spooled "
            f"object(s) the device never sent whole, {len(sent - spooled)} missing"
        )

    def sop_class_in_orthanc(self, orthanc_id: str) -> str:
        """The SOP Class UID of one stored instance, as Orthanc read it."""
        value = self.orthanc.rest("GET", f"/instances/{orthanc_id}/content/0008,0016")
        text = value.decode("ascii") if isinstance(value, bytes) else str(value)
        return text.strip("\x00 ")

    def assert_spool_clean(self) -> None:
        """Nothing half-received stays: staging is empty; raw/ and dicom/ hold only
        files the ledger names."""
        spool = self.state_dir / "spool"
        staging = sorted(p.name for p in (spool / "staging").iterdir())
        assert staging == [], f"partial captures left in staging/: {staging}"
        rows = self.rows()
        named = {r["raw_name"] for r in rows} | {r["dicom_name"] for r in rows if r["dicom_name"]}
        for folder in ("raw", "dicom"):
            unknown = sorted(p.name for p in (spool / folder).iterdir() if p.name not in named)
            assert unknown == [], f"files in {folder}/ that no capture owns: {unknown}"

    def assert_driver_never_crashed(self) -> None:
        """The supervisor never had to restart or quarantine the device's driver."""
        died = re.compile(
            rf"ERROR\s.*device {re.escape(DEVICE_NAME)}: driver "  # crashed, returned, hung
            rf"|device {re.escape(DEVICE_NAME)}: QUARANTINED"
            rf"|device:{re.escape(DEVICE_NAME)} (crashed|returned)"  # older supervisor wording
        )
        lines = [line for line in self.gateway_log().splitlines() if died.search(line)]
        assert lines == [], f"the driver died: {lines}\n{self.diagnostics()}"

    def refused_entries(self) -> list[Path]:
        """Entries a folder driver set aside in ``.refused/`` (reason files excluded)."""
        folder = self.adapter.drop_folder(self.workdir)
        assert folder is not None
        refused = folder / ".refused"
        if not refused.is_dir():
            return []
        return sorted(p for p in refused.iterdir() if not p.name.endswith(".reason.txt"))


@contextlib.contextmanager
def conformance_run(
    adapter: DeviceAdapter,
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
) -> Iterator[ConformanceRun]:
    """A harness whose simulator is stopped at the end, whatever happened."""
    run = ConformanceRun(adapter, tmp_path, orthanc, gateway_factory)
    try:
        yield run
    finally:
        run.stop()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def distinct(ids: Sequence[str]) -> list[str]:
    """``ids`` without repeats, in first-seen order."""
    return list(dict.fromkeys(ids))


def lexists(path: Path) -> bool:
    """True if ``path`` exists, even as a dangling symlink."""
    return os.path.lexists(path)
