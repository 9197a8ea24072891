"""Idle: an idle box's memory, CPU and disk writes, against Orthanc idling beside it.

``dermgate run`` starts with the demo's full configuration (``gateway.demo.run``'s
``demo_config``: four devices — a serial dermatoscope, a USB confocal microscope on
the emulated backend, a 3D scanner's export folder, a camera's photo folder — one
DICOM destination with Storage Commitment, the worklist from Orthanc's plugin, MQTT
to a private Mosquitto, the local page) against a private Orthanc. No simulator
runs: the devices are configured and unplugged (the serial port and the USB socket
do not exist, the folders are empty), which is what a box waiting for the morning's
first patient looks like.

The clock of the start-up runs from starting the process until its ``running as``
log line; its CPU (user + system) is read at that line. The gateway runs with its
bytecode cached, as on a box (:func:`box_like_env`): a first start warms the
cache and is not counted, ``--startups`` more are measured and stopped, and the
last start is the one measured idle; the median is judged. After ``--settle``
seconds, a measured window of ``--window`` seconds (60) reads, at both ends, of
the gateway and of Orthanc alike:

- RSS: ``VmRSS`` at the end and ``VmHWM`` (the peak since exec) from /proc/PID/status;
- CPU %: (utime + stime) from /proc/PID/stat over the window's wall time;
- bytes written per minute: ``write_bytes`` of /proc/PID/io (what reached the block
  layer on its behalf), and how many files of its state folder changed (created,
  modified or removed) over the window.

A DCMTK ``storescp`` listening on a free port is measured the same way, as the
smallest thing a DICOM box can idle as. The targets (issue 16, goal 5): gateway RSS
≤ 60 MB, CPU ≤ 0.5 %, 0 bytes/min, start-up ≤ 0.4 s.

``--no-worklist`` leaves ``[worklist]`` out (its refresh, every 60 s in the demo,
writes the ledger). Where the memory goes: bench/README.md, section ``idle.py``.

Run: ``.venv/bin/python bench/idle.py [--window 60] [--settle 10] [--no-worklist] [--keep]``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import IO

from common import DERMGATE, REPO, bench_dir, print_header, require_tools, stop_process

from gateway.demo.local_mosquitto import MosquittoProcess
from gateway.demo.local_orthanc import ORTHANC_BINARY, OrthancProcess, free_port
from gateway.demo.run import DEMO_AE, demo_config, demo_devices, one_time_login
from gateway.demo.worklist import (
    WORKLIST_PLUGIN,
    orthanc_worklist_settings,
    worklist_plugin_available,
    write_demo_worklist,
)
from gateway.service.config import load_config

RSS_TARGET_MB = 60.0
CPU_TARGET_PERCENT = 0.5
WRITES_TARGET = 0.0
STARTUP_TARGET_S = 0.4
_TICKS = os.sysconf("SC_CLK_TCK")


def status_kb(pid: int, field: str) -> int:
    """A ``kB`` field (VmRSS, VmHWM) of /proc/PID/status."""
    text = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # fields 14 and 15 of proc(5)


def write_bytes(pid: int) -> int:
    """Bytes the process caused to be written to storage (/proc/PID/io)."""
    text = Path(f"/proc/{pid}/io").read_text(encoding="ascii")
    found = re.search(r"^write_bytes:\s+(\d+)", text, re.MULTILINE)
    return int(found.group(1)) if found else 0


def folder_snapshot(folder: Path | None) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: relative path → (mtime_ns, size)."""
    if folder is None:
        return {}
    files: dict[str, tuple[int, int]] = {}
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            path = Path(dirpath) / name
            try:
                st = path.lstat()
            except OSError:
                continue
            files[str(path.relative_to(folder))] = (st.st_mtime_ns, st.st_size)
    return files


def changed_files(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> int:
    """Files created, modified or removed between two snapshots."""
    return sum(1 for key in before.keys() | after.keys() if before.get(key) != after.get(key))


@dataclass
class Idle:
    """One process's figures over the measured window."""

    name: str
    rss_mb: float
    hwm_mb: float
    cpu_percent: float
    written_per_min: float
    files_changed: int | None

    def line(self) -> str:
        """One line of the table."""
        files = "-" if self.files_changed is None else str(self.files_changed)
        return (
            f"{self.name:<24} {self.rss_mb:7.1f} MB {self.hwm_mb:7.1f} MB "
            f"{self.cpu_percent:7.2f} % {self.written_per_min / 1024:10.1f} KiB {files:>8}"
        )


class Probe:
    """Reads one process's counters at the start and at the end of the window."""

    def __init__(self, name: str, pid: int, state: Path | None) -> None:
        self.name = name
        self.pid = pid
        self.state = state
        self.cpu0 = cpu_seconds(pid)
        self.io0 = write_bytes(pid)
        self.files0 = folder_snapshot(state)
        self.t0 = time.monotonic()

    def finish(self) -> Idle:
        """The figures from the start of the window until now."""
        seconds = time.monotonic() - self.t0
        cpu = cpu_seconds(self.pid) - self.cpu0
        written = write_bytes(self.pid) - self.io0
        return Idle(
            self.name,
            status_kb(self.pid, "VmRSS") / 1024,
            status_kb(self.pid, "VmHWM") / 1024,
            100 * cpu / seconds,
            written * 60 / seconds,
            None if self.state is None else changed_files(self.files0, folder_snapshot(self.state)),
        )


@dataclass
class Startup:
    """When the gateway's ``running as`` line came, seconds after its start, and the
    CPU seconds (user + system) the process had used by then."""

    running_at: float | None = None
    cpu_at: float | None = None


def _read_log(stream: IO[bytes], started: float, found: Startup, copy: IO[bytes], pid: int) -> None:
    for raw in stream:
        if found.running_at is None and b" running as " in raw:
            found.running_at = time.perf_counter() - started
            found.cpu_at = cpu_seconds(pid)
        copy.write(raw)
        copy.flush()


def box_like_env(work: Path) -> dict[str, str]:
    """The gateway's environment: bytecode cached as on a box.

    A box's release venv is installed from wheels by pip, which writes every
    module's bytecode; a development shell with ``PYTHONDONTWRITEBYTECODE`` set
    (as here) makes an editable install compile DermGate's ~250 modules from source
    at every start (~0.3 s of CPU a box never spends). The bench keeps the
    bytecode in its own folder (``PYTHONPYCACHEPREFIX``: nothing written into the
    repository) and warms it with a first start it does not count.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


def start_gateway(
    config_path: Path, env: dict[str, str], log_copy: IO[bytes]
) -> tuple[subprocess.Popen[bytes], Startup, threading.Thread]:
    """Start ``dermgate run`` and wait for its ``running as`` line (60 s at most;
    ``running_at`` stays None if it exits or does not come)."""
    found = Startup()
    started = time.perf_counter()
    gateway = subprocess.Popen(
        [str(DERMGATE), "run", "--config", str(config_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
    )
    assert gateway.stderr is not None
    reader = threading.Thread(
        target=_read_log,
        args=(gateway.stderr, started, found, log_copy, gateway.pid),
        daemon=True,
    )
    reader.start()
    while found.cpu_at is None and time.perf_counter() - started < 60:
        if gateway.poll() is not None:
            break
        time.sleep(0.002)
    return gateway, found, reader


def measure_startups(
    config_path: Path, env: dict[str, str], log_copy: IO[bytes], count: int
) -> list[Startup]:
    """A warm-up start (bytecode written), then ``count`` starts to ``running as``,
    each stopped (SIGTERM) once it runs."""
    found: list[Startup] = []
    for n in range(count + 1):
        gateway, startup, reader = start_gateway(config_path, env, log_copy)
        stop_process(gateway)
        reader.join(5)
        if startup.running_at is None:
            raise RuntimeError("gateway did not log 'running as'; see gateway.log")
        if n:
            found.append(startup)
    return found


def verdict(name: str, value: float, target: float, unit: str, fmt: str = ".1f") -> str:
    """'met' or how far above the target ``value`` is."""
    if value <= target:
        return f"{name}: met ({value:{fmt}} {unit} <= {target:{fmt}} {unit})"
    return (
        f"{name}: MISSED by {value - target:{fmt}} {unit} "
        f"({value:{fmt}} {unit}, target <= {target:{fmt}} {unit})"
    )


def ratio_of(a: float, b: float) -> str:
    """``a / b`` as a ratio, or n/a."""
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def run(args: argparse.Namespace, work: Path) -> int:
    """Start the peers and the gateway, measure, print; the exit status."""
    listen_port = free_port()
    worklist = worklist_plugin_available() and not args.no_worklist
    worklists = work / "worklists"
    orthanc = OrthancProcess(
        work / "orthanc",
        modalities={"dermgate": (DEMO_AE, "127.0.0.1", listen_port)},
        plugins=(WORKLIST_PLUGIN,) if worklist else (),
        extra=orthanc_worklist_settings(worklists) if worklist else {},
    )
    if worklist:
        from datetime import date

        write_demo_worklist(worklists, date.today(), station=DEMO_AE, modality="XC")
    broker = MosquittoProcess(work / "mosquitto")
    storescp: subprocess.Popen[bytes] | None = None
    gateway: subprocess.Popen[bytes] | None = None
    orthanc_started = time.perf_counter()
    orthanc.start()
    orthanc_startup = time.perf_counter() - orthanc_started
    try:
        broker.start()
        devices = demo_devices(work)
        config_path = work / "dermgate.toml"
        config_path.write_text(
            demo_config(work, orthanc, listen_port, devices, free_port(), broker.port, worklist),
            encoding="utf-8",
        )
        config = load_config(config_path)
        one_time_login(config.users_path())
        state = config.gateway.state_dir
        scp_port = free_port()
        storescp = subprocess.Popen(
            ["storescp", "--output-directory", str(work), str(scp_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        env = box_like_env(work)
        with open(work / "gateway.log", "wb") as log_copy:
            startups = measure_startups(config_path, env, log_copy, args.startups)
            gateway, found, reader = start_gateway(config_path, env, log_copy)
            if found.running_at is None or found.cpu_at is None:
                print("gateway did not log 'running as' within 60 s; see log")
                print((work / "gateway.log").read_text(encoding="utf-8")[-3000:])
                return 1
            startups.append(found)
            walls = sorted(s.running_at for s in startups if s.running_at is not None)
            cpus = sorted(s.cpu_at for s in startups if s.cpu_at is not None)
            print(
                f"start-up, {len(startups)} starts after a warm-up (bytecode cached as on a "
                f"box): wall {' '.join(f'{w:.2f}' for w in walls)} s, CPU "
                f"{' '.join(f'{c:.2f}' for c in cpus)} s to 'running as'; "
                f"Orthanc {orthanc_startup:.2f} s to answering REST"
            )
            startup_wall = median(walls)
            startup_cpu = median(cpus)
            print(f"settling {args.settle:.0f} s, then measuring {args.window:.0f} s ...")
            sys.stdout.flush()
            time.sleep(args.settle)
            assert orthanc._proc is not None  # the bench reads its PID
            probes = [
                Probe("gateway (dermgate run)", gateway.pid, state),
                Probe("Orthanc", orthanc._proc.pid, orthanc.workdir / "storage"),
                Probe("storescp (DCMTK)", storescp.pid, None),
            ]
            time.sleep(args.window)
            figures = [probe.finish() for probe in probes]
            if gateway.poll() is not None:
                print(f"gateway exited ({gateway.returncode}) during the window")
                return 1
            report(figures, startup_wall, startup_cpu, orthanc_startup)
            stop_process(gateway)
            reader.join(5)
            gateway = None
    finally:
        if gateway is not None:
            stop_process(gateway)
        if storescp is not None:
            stop_process(storescp)
        broker.stop()
        orthanc.stop()
    return 0


def report(figures: list[Idle], startup: float, startup_cpu: float, orthanc_startup: float) -> None:
    """The table, the ratios against Orthanc and the verdict on each target."""
    gw, pacs, scp = figures
    print()
    print(
        f"{'process':<24} {'VmRSS':>10} {'VmHWM':>10} {'CPU':>9} {'written/min':>14} "
        f"{'files changed':>14}"
    )
    for idle in figures:
        print(idle.line())
    print()
    print(
        f"ratio gateway/Orthanc RSS:          {ratio_of(gw.rss_mb, pacs.rss_mb)}  (target <= 60 MB)"
    )
    print(f"ratio gateway/storescp RSS:         {ratio_of(gw.rss_mb, scp.rss_mb)}")
    print(
        f"ratio gateway/Orthanc CPU:          {ratio_of(gw.cpu_percent, pacs.cpu_percent)}"
        f"  (target <= {CPU_TARGET_PERCENT} %)"
    )
    print(
        f"ratio gateway/Orthanc start-up:     {ratio_of(startup, orthanc_startup)}"
        f"  (target <= {STARTUP_TARGET_S} s)"
    )
    print(verdict("RSS", gw.rss_mb, RSS_TARGET_MB, "MB"))
    print(verdict("CPU", gw.cpu_percent, CPU_TARGET_PERCENT, "%", ".2f"))
    print(verdict("writes", gw.written_per_min / 1024, WRITES_TARGET, "KiB/min"))
    if gw.files_changed:
        print(f"  ({gw.files_changed} file(s) of the state folder changed in the window)")
    print(f"start-up CPU (median):              {startup_cpu:.2f} s")
    print(verdict("start-up (median wall)", startup, STARTUP_TARGET_S, "s", ".2f"))


def main() -> int:
    """Parse the options and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured (60)")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after start-up (10)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument(
        "--startups",
        type=int,
        default=4,
        help="extra starts to 'running as' measured before the idle one (4)",
    )
    parser.add_argument(
        "--no-worklist",
        action="store_true",
        help="leave out [worklist] (its refresh writes the ledger every 60 s in the demo)",
    )
    args = parser.parse_args()
    require_tools(["storescp"])
    if not ORTHANC_BINARY.exists() or not Path("/usr/sbin/mosquitto").exists():
        sys.exit("Orthanc and Mosquitto are needed (scripts/setup.sh installs them)")
    print_header(
        "idle: dermgate run with the demo's full configuration, idle, beside Orthanc",
        [
            "config: 4 devices (serial dermatoscope, USB confocal, scanner export, photo "
            "folder; none plugged), 1 DICOM destination with storage commitment, "
            f"{'no worklist' if args.no_worklist else 'worklist (refresh 60 s)'}, MQTT, local page",
            f"window: {args.window:.0f} s after 'running as' + {args.settle:.0f} s",
        ],
    )
    with bench_dir("dermgate-idle-", keep=args.keep) as work:
        return run(args, work)


if __name__ == "__main__":
    sys.exit(main())
