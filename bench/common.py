"""What the benchmarks share: test images, DICOM files, a gateway process, a report.

Every benchmark runs from a clean clone with ``.venv/bin/python bench/NAME.py``. It
works in a temporary folder that it removes at the end, starts its own peers on free
loopback ports and stops them, and prints the gateway's figure as a ratio against an
anchor (a DCMTK tool doing the same work) measured in the same run on the same machine.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from drivers.serial_dermatoscope.images import make_dermoscopy_jpeg
from gateway.core.capture import CaptureOffer, DeviceIdentity, GatewayIdentity, InstanceUIDs
from gateway.core.uids import new_uid
from gateway.demo.local_orthanc import OrthancProcess
from gateway.dicom.dermoscopy import build_dermoscopic_photography
from gateway.dicom.jpeg import read_jpeg_info
from gateway.dicom.part10 import write_part10_encapsulated

REPO = Path(__file__).resolve().parent.parent
DERMGATE = Path(sys.executable).parent / "dermgate"

DEVICE = DeviceIdentity(
    manufacturer="DermGate Reference Devices",
    model="DS-100 Dermatoscope",
    serial_number="DS100-BENCH",
    software_versions=("2.4.1",),
)
GATEWAY = GatewayIdentity(gateway_id="bench-box", software_version="0.1.0", station_name="bench")
DRIVER = "serial-dermatoscope"

# Bytes per pixel of make_dermoscopy_jpeg at quality 95, 4:2:0 (measured: 6.84 MB at
# 4160 x 3120); used to pick a size for --size-mb without a probe image.
_BYTES_PER_PIXEL = 0.527

TomlTable = dict[str, str | int | float | bool]


def machine_summary() -> str:
    """One line naming the machine the figures come from."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPU(s), {model}, {platform.machine()}, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )


def source_revision() -> str:
    """The commit the gateway code comes from, and whether it has local changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "gateway", "drivers"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head}" + (
        f" + {len(changed)} changed file(s) in gateway/, drivers/" if changed else ""
    )


def require_tools(names: Iterable[str]) -> None:
    """Exit with a message when a program the benchmark needs is missing."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        sys.exit(f"missing on PATH: {', '.join(missing)} (scripts/setup.sh installs them)")


@contextlib.contextmanager
def bench_dir(prefix: str, keep: bool = False) -> Iterator[Path]:
    """A temporary working folder, removed afterwards unless ``keep``."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def image_size_for(size_mb: float) -> tuple[int, int]:
    """A 4:3 image size whose dermoscopic JPEG is about ``size_mb`` megabytes."""
    pixels = size_mb * 1e6 / _BYTES_PER_PIXEL
    height = math.sqrt(pixels * 3 / 4)
    width = height * 4 / 3
    return max(16, round(width / 16) * 16), max(16, round(height / 16) * 16)


@dataclass(frozen=True)
class TestImages:
    """Distinct dermoscopic JPEGs, cycled to make as many captures as wanted."""

    paths: tuple[Path, ...]
    width: int
    height: int
    seconds_each: float

    def for_capture(self, index: int) -> Path:
        """The JPEG of capture ``index``."""
        return self.paths[index % len(self.paths)]

    def mean_mb(self, count: int) -> float:
        """Mean size in MB (10^6 bytes) of ``count`` captures."""
        return sum(self.for_capture(i).stat().st_size for i in range(count)) / count / 1e6


def make_images(folder: Path, distinct: int, size_mb: float) -> TestImages:
    """Write ``distinct`` synthetic dermoscopic JPEGs of about ``size_mb`` MB."""
    folder.mkdir(parents=True, exist_ok=True)
    width, height = image_size_for(size_mb)
    paths = []
    started = time.perf_counter()
    for seed in range(distinct):
        path = folder / f"image-{seed}.jpg"
        path.write_bytes(make_dermoscopy_jpeg(seed, width=width, height=height))
        paths.append(path)
    seconds_each = (time.perf_counter() - started) / max(distinct, 1)
    return TestImages(tuple(paths), width, height, seconds_each)


@dataclass(frozen=True)
class BuiltFile:
    """A Part 10 file made by the project's builder, and what the ledger needs of it."""

    path: Path
    uids: InstanceUIDs
    sop_class_uid: str
    transfer_syntax_uid: str


def build_dicom(jpeg: Path, dest_dir: Path, capture_id: str) -> BuiltFile:
    """Build a Dermoscopic Photography Part 10 file with fresh UIDs, as the gateway does."""
    uids = InstanceUIDs(study=new_uid(), series=new_uid(), sop_instance=new_uid())
    dataset = build_dermoscopic_photography(
        identity=DEVICE,
        offer=CaptureOffer(device_capture_id=capture_id),
        uids=uids,
        jpeg=read_jpeg_info(jpeg),
        gateway=GATEWAY,
        patient=None,
        now=datetime.now(UTC),
        series_number=1,
        instance_number=1,
    )
    dest = dest_dir / f"{uids.sop_instance}.dcm"
    write_part10_encapsulated(dataset, jpeg, dest)
    return BuiltFile(dest, uids, str(dataset.SOPClassUID), str(dataset.file_meta.TransferSyntaxUID))


def count_in_states(ledger_path: Path, states: Sequence[str]) -> int:
    """How many captures the ledger (opened read-only) holds in ``states``; -1 if unreadable."""
    try:
        conn = sqlite3.connect(f"file:{ledger_path}?mode=ro", uri=True)
    except sqlite3.Error:
        return -1
    try:
        marks = ", ".join("?" for _ in states)
        row = conn.execute(
            f"SELECT COUNT(*) FROM captures WHERE state IN ({marks})", tuple(states)
        ).fetchone()
        return int(row[0])
    except sqlite3.Error:
        return -1
    finally:
        conn.close()


def stop_process(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM a child we started, SIGKILL it after ``grace`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class GatewayRun:
    """Timings of one ``dermgate run`` subprocess, seconds from its start."""

    running_at: float | None = None
    done_at: float | None = None
    stopped_in: float | None = None
    log_lines: list[tuple[float, str]] = field(default_factory=list)
    cpu_at_running: float | None = None
    """CPU seconds (user + system) the process had used when it logged ``running as``."""

    def first_line_with(self, text: str) -> float | None:
        """When the first log line containing ``text`` was read."""
        return next((t for t, line in self.log_lines if text in line), None)

    def last_line_with(self, text: str) -> float | None:
        """When the last log line containing ``text`` was read."""
        return next((t for t, line in reversed(self.log_lines) if text in line), None)


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) process ``pid`` has used so far; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _read_log(
    stream: IO[bytes], started: float, run: GatewayRun, copy: IO[bytes], pid: int
) -> None:
    for raw in stream:
        now = time.perf_counter() - started
        copy.write(raw)
        line = raw.decode("utf-8", "replace").rstrip()
        run.log_lines.append((now, line))
        if run.running_at is None and " running as " in line:
            run.running_at = now
            run.cpu_at_running = process_cpu(pid)


def run_gateway_until(
    config_path: Path,
    ledger_path: Path,
    *,
    wanted: int,
    states: Sequence[str],
    timeout: float,
    log_path: Path,
    poll: float = 0.02,
    preexec: Callable[[], None] | None = None,
) -> GatewayRun:
    """Start ``dermgate run``, wait until ``wanted`` captures are in ``states``, stop it.

    ``done_at`` stays None on timeout or if the gateway exits early. The gateway's
    stderr is kept in ``log_path`` and timestamped in ``log_lines``. ``preexec`` runs
    in the child before it execs (e.g. ``CpuBudget.preexec``).
    """
    run = GatewayRun()
    with open(log_path, "wb") as log_copy:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [str(DERMGATE), "run", "--config", str(config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=REPO,
            preexec_fn=preexec,
        )
        assert proc.stderr is not None
        reader = threading.Thread(
            target=_read_log, args=(proc.stderr, started, run, log_copy, proc.pid), daemon=True
        )
        reader.start()
        try:
            while time.perf_counter() - started < timeout and proc.poll() is None:
                if count_in_states(ledger_path, states) >= wanted:
                    run.done_at = time.perf_counter() - started
                    break
                time.sleep(poll)
        finally:
            stopping = time.perf_counter()
            stop_process(proc)
            run.stopped_in = time.perf_counter() - stopping
            reader.join(5)
    return run


def gateway_config(
    state_dir: Path,
    *,
    listen_port: int,
    destination: TomlTable | None = None,
    device: TomlTable | None = None,
) -> str:
    """A ``dermgate`` TOML configuration with at most one destination and one device."""

    def table(values: TomlTable) -> str:
        out = []
        for key, value in values.items():
            if isinstance(value, bool):
                out.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, str):
                out.append(f'{key} = "{value}"')
            else:
                out.append(f"{key} = {value}")
        return "\n".join(out)

    text = (
        "[gateway]\n"
        'id = "bench-box"\n'
        'ae_title = "DERMGATE"\n'
        f"listen_port = {listen_port}\n"
        f'state_dir = "{state_dir}"\n'
        'log_level = "INFO"\n'
        # captures come without a patient session: send them at once, never hold
        "\n[context]\nhold_unidentified = 0\n"
    )
    if destination is not None:
        text += "\n[[destinations]]\n" + table(destination) + "\n"
    if device is not None:
        text += "\n[[devices]]\n" + table(device) + "\n"
    return text


def ratio(numerator: float, denominator: float) -> str:
    """``numerator / denominator`` formatted as a ratio."""
    if denominator <= 0:
        return "n/a"
    return f"{numerator / denominator:.2f}x"


def print_header(title: str, lines: Iterable[str]) -> None:
    """Print the benchmark's title, the machine and its parameters."""
    print(f"== {title}")
    print(f"machine: {machine_summary()}")
    print(f"gateway code: {source_revision()}")
    for line in lines:
        print(line)
    sys.stdout.flush()


def check_stored(orthanc: OrthancProcess, wanted: int, side: str) -> None:
    """Fail loudly unless Orthanc holds exactly ``wanted`` instances."""
    stored = orthanc.count_instances()
    if stored != wanted:
        raise RuntimeError(f"{side}: Orthanc stores {stored} instances, expected {wanted}")
