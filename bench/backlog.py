"""Backlog: N captures queued while the PACS is down, then drained; against ``dcmsend``.

Gateway: a spool filled through the project's own APIs (``SpoolDirs``, ``open_ledger``,
``insert_capture``, ``mark_wrapped``; DICOM files from the project's builder) with N
small WRAPPED captures (``--size`` 640x480 4:2:0 JPEGs of ~75 KB, a few distinct
images cycled under fresh UIDs) for one destination on a loopback port where nothing
listens. ``dermgate run`` runs for ``--outage`` seconds against it (it fails, opens
its circuit and probes with C-ECHO); afterwards every capture must still be WRAPPED,
none QUARANTINED, every DICOM file on disk. Then a private Orthanc starts on that
port, and the clock runs until the ledger (read read-only) says all N are SENT. The
destination has ``storage_commitment = false`` (everything else default), so the
figure is the C-STORE drain, not Storage Commitment.

Peak RSS: VmHWM from /proc/PID/status, polled (not ``ru_maxrss``, which for a child
of this Python process counts the parent's pages from before the exec). The
gateway's is reset (``clear_refs``) between the outage and the drain so that each
phase gets its own peak.

Anchor: ``dcmsend`` of the same N files (the spool's ``dicom/``) into a fresh Orthanc
of the same build and configuration, on one association; then (``--parallel``, on by
default, as the gateway uses two associations) two ``dcmsend`` with half each.
The Orthanc instance count is sampled every second during the anchor, and the
ledger's SENT count during the gateway's drain, to show whether either side slows
down as the backlog (or the PACS's index) grows.

``--cpu-budget 0.5``: the gateway and the anchor each run confined to half of one
core (:mod:`cpu_budget`, cgroup v1 ``cpu`` quota; root only), the two parallel
``dcmsend`` sharing one budget as the gateway's two associations do; Orthanc (the
PACS, another machine in a clinic) is not confined. That is the CPU-bound regime of
a Raspberry Pi on this machine.

Run: ``.venv/bin/python bench/backlog.py [--count 10000] [--size 640x480] [--cpu-budget F]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import itertools
import os
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from common import (
    DERMGATE,
    DEVICE,
    DRIVER,
    bench_dir,
    build_dicom,
    count_in_states,
    gateway_config,
    print_header,
    ratio,
    require_tools,
)
from cpu_budget import CpuBudget, CpuBudgetUnavailable, cpu_budget
from PIL import Image

from drivers.serial_dermatoscope.images import make_dermoscopy_jpeg
from gateway.core.capture import CaptureOffer
from gateway.demo.local_orthanc import ORTHANC_BINARY, OrthancProcess, free_port
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import insert_capture, mark_wrapped, open_ledger

DESTINATION = "pacs"
DELIVERED = ("SENT", "COMMITTED")


def _interrupt_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so that the clean-up always runs."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


# --------------------------------------------------------------------------- inputs


def make_small_jpegs(
    folder: Path, distinct: int, width: int, height: int, quality: int
) -> list[Path]:
    """``distinct`` dermoscopic JPEGs (baseline, 4:2:0) re-encoded at ``quality``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(distinct):
        image = Image.open(io.BytesIO(make_dermoscopy_jpeg(seed, width=width, height=height)))
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=quality, subsampling=2)
        path = folder / f"image-{seed}.jpg"
        path.write_bytes(out.getvalue())
        paths.append(path)
    return paths


def populate_spool(state_dir: Path, jpegs: Sequence[Path], count: int) -> float:
    """``count`` WRAPPED captures with fresh UIDs; return the mean DICOM file size in bytes.

    The raw copies are hard links to the few distinct JPEGs (same bytes, same SHA-256)
    so that the disk holds N DICOM files, not 2 N files; the ledger rows are written
    by the project's functions, with SQLite's fsyncs off for this set-up connection
    only (the gateway opens its own, with ``synchronous=FULL``).
    """
    dirs = SpoolDirs(state_dir / "spool")
    dirs.create()
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in jpegs}
    conn = open_ledger(state_dir / "ledger.sqlite3")
    conn.execute("PRAGMA synchronous = OFF")
    total = 0
    started = time.perf_counter()
    try:
        for index in range(count):
            jpeg = jpegs[index % len(jpegs)]
            capture_id = f"{index:06d}"
            built = build_dicom(jpeg, dirs.dicom, capture_id)
            total += built.path.stat().st_size
            raw_name = f"{built.uids.sop_instance}.raw"
            try:
                os.link(jpeg, dirs.raw / raw_name)
            except OSError:
                shutil.copyfile(jpeg, dirs.raw / raw_name)
            spool_id = insert_capture(
                conn,
                driver=DRIVER,
                device=DEVICE,
                offer=CaptureOffer(device_capture_id=capture_id),
                uids=built.uids,
                raw_name=raw_name,
                raw_size=jpeg.stat().st_size,
                raw_sha256=digests[jpeg],
            )
            mark_wrapped(
                conn,
                spool_id,
                dicom_name=built.path.name,
                sop_class_uid=built.sop_class_uid,
                transfer_syntax_uid=built.transfer_syntax_uid,
                destinations=[DESTINATION],
                now=time.time(),
            )
            if (index + 1) % 2000 == 0:
                print(
                    f"  spool: {index + 1}/{count} captures "
                    f"({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
    finally:
        conn.close()
    return total / count


# --------------------------------------------------------------------------- process


def status_kb(pid: int, key: str) -> int | None:
    """A ``kB`` field (VmHWM, VmRSS) of /proc/PID/status; None once the process is gone."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds used so far by ``pid`` (its threads included)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
        fields = text.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (``clear_refs`` 5); False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5", encoding="ascii")
    except OSError:
        return False
    return True


@dataclass
class Child:
    """A child process whose stderr is read by a thread and whose rusage is kept."""

    proc: subprocess.Popen[bytes]
    started: float
    lines: list[tuple[float, str]] = field(default_factory=list)
    peak_kb: int = 0
    cpu_s: float = 0.0
    returncode: int | None = None
    _reader: threading.Thread | None = None

    @classmethod
    def start(
        cls,
        cmd: Sequence[str],
        log_path: Path,
        cwd: Path | None = None,
        budget: CpuBudget | None = None,
    ) -> Child:
        """Start ``cmd`` (inside ``budget``, if any); its stderr goes to ``log_path``
        and ``lines`` (timestamped)."""
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=cwd,
            preexec_fn=None if budget is None else budget.preexec,
        )
        child = cls(proc, time.perf_counter())
        assert proc.stderr is not None
        child._reader = threading.Thread(
            target=child._read, args=(proc.stderr, log_path), daemon=True
        )
        child._reader.start()
        return child

    def _read(self, stream: IO[bytes], log_path: Path) -> None:
        with open(log_path, "ab") as copy:
            for raw in stream:
                copy.write(raw)
                self.lines.append(
                    (time.perf_counter() - self.started, raw.decode("utf-8", "replace").rstrip())
                )

    def first(self, text: str) -> float | None:
        """Seconds from start to the first log line containing ``text``."""
        return next((t for t, line in list(self.lines) if text in line), None)

    def sample(self) -> None:
        """Note the child's VmHWM (its peak RSS since exec) while it runs.

        Not ``ru_maxrss``: for a child forked from this Python process that counts
        the parent's pages from before the exec.
        """
        if self.returncode is None:
            self.peak_kb = max(self.peak_kb, status_kb(self.proc.pid, "VmHWM") or 0)

    def try_reap(self) -> bool:
        """Reap the child if it exited (keeping its CPU time); True once it has."""
        if self.returncode is not None:
            return True
        if self.proc.returncode is not None:  # already reaped by Popen.poll()
            self.returncode = self.proc.returncode
            return True
        pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        if not pid:
            return False
        self.returncode = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.returncode  # Popen must not wait for it again
        self.cpu_s = usage.ru_utime + usage.ru_stime
        if self._reader is not None:
            self._reader.join(5)
        return True

    def reap(self, timeout: float) -> int:
        """Wait, sampling the peak RSS; SIGKILL after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self.try_reap():
            if time.monotonic() > deadline:
                self.proc.kill()
            self.sample()
            time.sleep(0.05)
        assert self.returncode is not None
        return self.returncode

    def stop(self, grace: float = 60.0) -> int:
        """SIGTERM, then reap (SIGKILL after ``grace``)."""
        if self.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.reap(grace)
        return self.returncode

    def kill(self) -> None:
        """SIGKILL if still running (clean-up path)."""
        if self.returncode is None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def poll_until(
    done: Callable[[], bool], timeout: float, pid: int, poll: float = 0.25
) -> tuple[bool, int]:
    """Poll ``done()`` until true or timeout, tracking VmHWM of ``pid``; (done, peak kB)."""
    peak = 0
    deadline = time.monotonic() + timeout
    while True:
        peak = max(peak, status_kb(pid, "VmHWM") or 0)
        if done():
            return True, peak
        if time.monotonic() > deadline:
            return False, peak
        time.sleep(poll)


def ledger_summary(ledger: Path) -> tuple[dict[str, int], int, float]:
    """Capture states, the most attempts of any delivery, the latest next attempt (s from now)."""
    conn = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=10)
    try:
        states = dict(conn.execute("SELECT state, COUNT(*) FROM captures GROUP BY state"))
        attempts, latest = conn.execute(
            "SELECT MAX(attempts), MAX(next_attempt_at) FROM deliveries"
        ).fetchone()
    finally:
        conn.close()
    return states, int(attempts or 0), float(latest or 0) - time.time()


# --------------------------------------------------------------------------- main


@dataclass
class GatewayFigures:
    """What the gateway side measured."""

    startup_s: float
    outage_peak_kb: int
    outage_states: dict[str, int]
    outage_attempts: int
    outage_latest_due_s: float
    circuit_open_at: float | None
    restore_s: float | None
    first_sent_s: float | None
    drain_s: float
    drain_peak_kb: int
    drain_cpu_s: float
    progress: list[tuple[float, int]]
    cpu_s: float
    stop_s: float
    exit_code: int


def run_gateway(
    work: Path, state_dir: Path, count: int, args: argparse.Namespace, budget: CpuBudget
) -> GatewayFigures:
    """Outage, then drain; raises if anything was lost or the drain did not finish."""
    ledger = state_dir / "ledger.sqlite3"
    dicom_dir = state_dir / "spool" / "dicom"
    pacs_port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    config = work / "dermgate.toml"
    config.write_text(
        gateway_config(
            state_dir,
            listen_port=free_port(),
            destination={
                "name": DESTINATION,
                "kind": "dicom",
                "ae_title": "ORTHANC",
                "host": "127.0.0.1",
                "port": pacs_port,
                "storage_commitment": False,
            },
        ),
        encoding="utf-8",
    )
    gateway = Child.start(
        [str(DERMGATE), "run", "--config", str(config)], work / "gateway.log", budget=budget
    )
    orthanc = OrthancProcess(work / "orthanc-gateway", dicom_port=pacs_port)
    try:
        poll_until(
            lambda: gateway.first(" running as ") is not None or gateway.proc.poll() is not None,
            120,
            gateway.proc.pid,
        )
        startup = gateway.first(" running as ")
        if startup is None:
            tail = "\n".join(line for _, line in gateway.lines[-15:])
            raise RuntimeError(f"gateway did not start:\n{tail}")
        outage_end = time.monotonic() + args.outage
        _, outage_peak = poll_until(
            lambda: time.monotonic() >= outage_end or gateway.proc.poll() is not None,
            args.outage + 5,
            gateway.proc.pid,
            poll=0.5,
        )
        if gateway.proc.poll() is not None:
            raise RuntimeError("gateway exited during the outage")
        states, attempts, latest_due = ledger_summary(ledger)
        files = sum(1 for _ in dicom_dir.glob("*.dcm"))
        if states != {"WRAPPED": count} or files != count:
            raise RuntimeError(f"after the outage: ledger {states}, {files} DICOM files")
        circuit_open_at = gateway.first("circuit open")
        reset_ok = reset_peak(gateway.proc.pid)
        print(
            f"  outage: {args.outage:.0f} s, ledger {states}, {files} DICOM files, "
            f"peak RSS {outage_peak / 1024:.0f} MB; starting Orthanc on port {pacs_port}",
            flush=True,
        )

        cpu_before = cpu_seconds(gateway.proc.pid) or 0.0
        orthanc.start()
        up = time.perf_counter() - gateway.started
        sent_at: list[float] = []
        progress: list[tuple[float, int]] = []

        def all_sent() -> bool:
            n = count_in_states(ledger, DELIVERED)
            now = time.perf_counter() - gateway.started
            progress.append((now - up, n))
            if n > 0 and not sent_at:
                sent_at.append(now)
            return n >= count

        drained, drain_peak = poll_until(all_sent, args.timeout, gateway.proc.pid)
        done = time.perf_counter() - gateway.started
        drain_cpu = (cpu_seconds(gateway.proc.pid) or 0.0) - cpu_before
        if not drained:
            raise RuntimeError(
                f"not drained in {args.timeout:.0f} s: "
                f"{count_in_states(ledger, DELIVERED)}/{count} SENT"
            )
        if not reset_ok:
            drain_peak = max(drain_peak, outage_peak)
        stopping = time.perf_counter()
        exit_code = gateway.stop()
        stop_s = time.perf_counter() - stopping
        stored = orthanc.count_instances()
        if stored != count:
            raise RuntimeError(f"Orthanc stores {stored} instances, expected {count}")
        restored = gateway.first("link restored")
        return GatewayFigures(
            startup_s=startup,
            outage_peak_kb=outage_peak,
            outage_states=states,
            outage_attempts=attempts,
            outage_latest_due_s=latest_due,
            circuit_open_at=circuit_open_at,
            restore_s=None if restored is None else restored - up,
            first_sent_s=None if not sent_at else sent_at[0] - up,
            drain_s=done - up,
            drain_peak_kb=drain_peak,
            drain_cpu_s=drain_cpu,
            progress=progress,
            cpu_s=gateway.cpu_s,
            stop_s=stop_s,
            exit_code=exit_code,
        )
    finally:
        gateway.kill()
        orthanc.stop()
        shutil.rmtree(work / "orthanc-gateway", ignore_errors=True)


@dataclass
class AnchorFigures:
    """What one dcmsend measurement gave."""

    seconds: float
    peak_kb: int
    cpu_s: float
    progress: list[tuple[float, int]]


def run_dcmsend(
    work: Path, dicom_dir: Path, count: int, processes: int, timeout: float, budget: CpuBudget
) -> AnchorFigures:
    """``dcmsend`` of every file in ``dicom_dir`` into a fresh Orthanc.

    ``processes`` dcmsend processes in parallel, one association each, each with an
    equal share of the files (named relative to ``dicom_dir``: 10,000 names fit on a
    command line), all inside ``budget``. Peak RSS is the largest of them, CPU their sum.
    """
    names = sorted(p.name for p in dicom_dir.glob("*.dcm"))
    shares = [names[k::processes] for k in range(processes)]
    workdir = work / f"orthanc-dcmsend-{processes}"
    orthanc = OrthancProcess(workdir)
    orthanc.start()
    senders: list[Child] = []
    try:
        started = time.perf_counter()
        for k, share in enumerate(shares):
            senders.append(
                Child.start(
                    [
                        "dcmsend",
                        "-aet",
                        "DCMSEND",
                        "-aec",
                        orthanc.aet,
                        "127.0.0.1",
                        str(orthanc.dicom_port),
                        *share,
                    ],
                    work / f"dcmsend-{processes}-{k}.log",
                    cwd=dicom_dir,
                    budget=budget,
                )
            )
        progress: list[tuple[float, int]] = []
        deadline = started + timeout
        next_count = started
        while not all(sender.try_reap() for sender in senders):
            now = time.perf_counter()
            if now > deadline:
                raise RuntimeError(f"dcmsend did not finish in {timeout:.0f} s")
            for sender in senders:
                sender.sample()
            if now >= next_count:  # Orthanc's count, to see whether the PACS slows down
                with contextlib.suppress(OSError):
                    progress.append((now - started, orthanc.count_instances()))
                next_count = now + 1.0
            time.sleep(0.05)
        codes = [sender.returncode for sender in senders]
        seconds = time.perf_counter() - started
        for sender, code in zip(senders, codes, strict=True):
            if code != 0:
                tail = "\n".join(line for _, line in sender.lines[-10:])
                raise RuntimeError(f"dcmsend failed ({code}):\n{tail}")
        stored = orthanc.count_instances()
        if stored != count:
            raise RuntimeError(f"dcmsend: Orthanc stores {stored} instances, expected {count}")
        return AnchorFigures(
            seconds,
            max(sender.peak_kb for sender in senders),
            sum(sender.cpu_s for sender in senders),
            progress,
        )
    finally:
        for sender in senders:
            sender.kill()
        orthanc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def drain_profile(progress: Sequence[tuple[float, int]], count: int) -> str:
    """Instances/s over each tenth of the backlog, to show drift ("-": too short to time)."""
    if count < 10 or not progress:
        return "n/a"
    marks: list[float] = []
    for tenth in range(11):
        wanted = max(1, count * tenth // 10)
        marks.append(next((t for t, n in progress if n >= wanted), progress[-1][0]))
    return " ".join(
        f"{count / 10 / (b - a):.0f}" if b > a else "-" for a, b in itertools.pairwise(marks)
    )


def parse_size(text: str) -> tuple[int, int]:
    """``640x480`` → (640, 480)."""
    match = re.fullmatch(r"(\d+)[xX](\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError("expected WIDTHxHEIGHT, e.g. 640x480")
    return int(match.group(1)), int(match.group(2))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print drain rates, the ratio gateway/dcmsend and peak RSS."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000, help="captures (default 10000)")
    parser.add_argument(
        "--size", type=parse_size, default=(640, 480), help="image WxH (default 640x480)"
    )
    parser.add_argument("--quality", type=int, default=75, help="JPEG quality (default 75)")
    parser.add_argument(
        "--distinct", type=int, default=8, help="distinct images, cycled (default 8)"
    )
    parser.add_argument(
        "--outage", type=float, default=60.0, help="seconds the gateway runs with the PACS down"
    )
    parser.add_argument(
        "--parallel",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time 2 dcmsend processes in parallel (the gateway uses 2 associations)",
    )
    parser.add_argument(
        "--cpu-budget",
        type=float,
        default=None,
        metavar="F",
        help="confine the gateway and dcmsend each to F of one core (cgroup v1; root)",
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="per drain, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    require_tools(["dcmsend"])
    if not ORTHANC_BINARY.exists() or not DERMGATE.exists():
        sys.exit(f"need {ORTHANC_BINARY} and {DERMGATE} (scripts/setup.sh)")
    try:  # fail now, not after filling the spool
        with cpu_budget(args.cpu_budget, "probe"):
            pass
    except CpuBudgetUnavailable as err:
        sys.exit(str(err))
    _interrupt_on_sigterm()
    width, height = args.size

    with bench_dir("dermgate-bench-backlog-", keep=args.keep) as work:
        jpegs = make_small_jpegs(
            work / "jpeg", min(args.distinct, args.count), width, height, args.quality
        )
        jpeg_kb = sum(p.stat().st_size for p in jpegs) / len(jpegs) / 1e3
        # Spool DICOM files + one Orthanc's copy of them (+ its index), plus margin.
        need = args.count * jpeg_kb * 1e3 * 2.2 + 512e6
        free = shutil.disk_usage(work).free
        if free < need:
            print(
                f"WARNING: {free / 1e9:.1f} GB free in {work}, this run needs about "
                f"{need / 1e9:.1f} GB; reduce --count",
                file=sys.stderr,
            )
        state_dir = work / "state"
        started = time.perf_counter()
        mean_bytes = populate_spool(state_dir, jpegs, args.count)
        fill_s = time.perf_counter() - started
        total_mb = mean_bytes * args.count / 1e6
        print_header(
            "backlog: N captures queued while the PACS is down, then drained; gateway vs dcmsend",
            [
                f"captures: {args.count} x {mean_bytes / 1e3:.0f} kB Part 10 ({width}x{height} "
                f"JPEG 4:2:0 q{args.quality}, {len(jpegs)} distinct, cycled) = "
                f"{total_mb:.0f} MB; spool filled in {fill_s:.0f} s",
                f"gateway: default destination settings, storage_commitment = false "
                f"(C-STORE drain only); PACS down for {args.outage:.0f} s, then a private "
                "Orthanc (fsync per stored file, its default) starts on that port",
            ],
        )
        print(
            "CPU budget: "
            + (
                "none (every core the machine gives)"
                if args.cpu_budget is None
                else f"{args.cpu_budget:g} of one core each for the gateway, dcmsend, and the "
                "2 dcmsend together (cgroup v1 cpu quota); Orthanc unconfined"
            ),
            flush=True,
        )
        budgets: list[tuple[str, CpuBudget]] = []
        with cpu_budget(args.cpu_budget, "gateway") as budget:
            gw = run_gateway(work / "gateway", state_dir, args.count, args, budget)
        budgets.append(("gateway", budget))
        dicom_dir = state_dir / "spool" / "dicom"
        with cpu_budget(args.cpu_budget, "dcmsend") as budget:
            anchor = run_dcmsend(work, dicom_dir, args.count, 1, args.timeout, budget)
        budgets.append(("dcmsend", budget))
        parallel = None
        if args.parallel:
            with cpu_budget(args.cpu_budget, "dcmsend2") as budget:
                parallel = run_dcmsend(work, dicom_dir, args.count, 2, args.timeout, budget)
            budgets.append(("2 x dcmsend", budget))

        print()
        print(
            f"gateway start-up:            {gw.startup_s:.2f} s (ledger + reconciliation "
            f"of {args.count} captures)"
        )
        print(
            "outage:                      circuit open after "
            + (f"{gw.circuit_open_at - gw.startup_s:.1f} s" if gw.circuit_open_at else "never")
            + f"; ledger {gw.outage_states}, max attempts per delivery {gw.outage_attempts}, "
            f"latest retry due in {gw.outage_latest_due_s:.0f} s"
        )
        print(
            "PACS back -> link restored:  "
            + (f"{gw.restore_s:.1f} s" if gw.restore_s is not None else "not logged")
            + "; first SENT: "
            + (f"{gw.first_sent_s:.1f} s" if gw.first_sent_s is not None else "n/a")
        )
        n = args.count
        gw_rate = n / gw.drain_s
        budget_note = "" if args.cpu_budget is None else f" (both on {args.cpu_budget:g} core)"
        after_first = gw.drain_s - (gw.first_sent_s or 0.0)
        dcm_rate = n / anchor.seconds
        print(
            f"gateway drain:               {gw.drain_s:7.1f} s  {gw_rate:6.1f} instances/s  "
            f"{total_mb / gw.drain_s:5.1f} MB/s (PACS up -> all SENT; 2 associations)"
        )
        print(
            f"gateway, first SENT -> all:  {after_first:7.1f} s  {n / after_first:6.1f} instances/s"
        )
        print(f"gateway drain by tenths:     {drain_profile(gw.progress, n)} instances/s")
        print(
            f"dcmsend:                     {anchor.seconds:7.1f} s  {dcm_rate:6.1f} instances/s  "
            f"{total_mb / anchor.seconds:5.1f} MB/s (one association)"
        )
        print(f"dcmsend by tenths:           {drain_profile(anchor.progress, n)} instances/s")
        if parallel is not None:
            print(
                f"2 x dcmsend in parallel:     {parallel.seconds:7.1f} s  "
                f"{n / parallel.seconds:6.1f} instances/s  {total_mb / parallel.seconds:5.1f} MB/s"
            )
        print(
            f"peak RSS, gateway:           outage {gw.outage_peak_kb / 1024:.0f} MB, drain "
            f"{gw.drain_peak_kb / 1024:.0f} MB (VmHWM, polled)"
        )
        print(f"peak RSS, dcmsend:           {anchor.peak_kb / 1024:.0f} MB (VmHWM, polled)")
        gw_cpu_ms = gw.drain_cpu_s / n * 1e3
        dcm_cpu_ms = anchor.cpu_s / n * 1e3
        print(
            f"CPU per instance:            gateway {gw_cpu_ms:.2f} ms "
            f"(drain: {gw.drain_cpu_s:.1f} s; whole life {gw.cpu_s:.1f} s), "
            f"dcmsend {dcm_cpu_ms:.2f} ms"
            + (f", 2 x dcmsend {parallel.cpu_s / n * 1e3:.2f} ms" if parallel else "")
        )
        if args.cpu_budget is not None:
            for who, budget in budgets:
                print(f"CPU budget, {who + ':':13s}  {budget.describe()}")
        print(f"gateway SIGTERM -> exit:     {gw.stop_s:.2f} s (exit {gw.exit_code})")
        print(
            f"ratio gateway/dcmsend drain rate:              {ratio(gw_rate, dcm_rate)}  "
            f"(target >= 1.0x){budget_note}"
        )
        print(f"ratio gateway/dcmsend, first SENT -> all SENT: {ratio(n / after_first, dcm_rate)}")
        if parallel is not None:
            print(
                "ratio gateway/2 x dcmsend drain rate:          "
                f"{ratio(gw_rate, n / parallel.seconds)}"
            )
        print(
            f"ratio gateway/dcmsend peak RSS (drain):        "
            f"{ratio(gw.drain_peak_kb, anchor.peak_kb)}"
        )
        print(
            f"ratio gateway/dcmsend CPU per instance:        {ratio(gw_cpu_ms, dcm_cpu_ms)}  "
            "(target <= 2.0x)"
        )
        misses = []
        if dcm_cpu_ms > 0 and gw_cpu_ms > 2.0 * dcm_cpu_ms:
            misses.append(
                f"CPU per instance is {gw_cpu_ms / dcm_cpu_ms:.2f}x dcmsend's, target <= 2.0x: "
                f"{gw_cpu_ms - 2.0 * dcm_cpu_ms:.2f} ms per instance too many"
            )
        if gw_rate < dcm_rate:
            misses.append(
                f"the drain rate{budget_note} is {gw_rate / dcm_rate:.2f}x dcmsend's, target "
                f">= 1.0x: {dcm_rate - gw_rate:.1f} instances/s short"
            )
        for miss in misses:
            print(f"MISSED: {miss}")
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"(this script's own peak RSS: {own / 1024:.0f} MB)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
