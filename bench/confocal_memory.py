"""Confocal memory: peak RSS of the gateway taking a 20 MB and a 1 GB confocal stack.

The whole way is exercised: the RCM-1 simulator (its own process) streams one
z-stack of 1024 × 1024 8-bit frames over the emulated USB backend → the
``usb-confocal`` driver → intake, which writes the pixels straight into the
Confocal Microscopy Part 10 file (one write; the per-frame groups are filled in at
commit) → the destination: **C-STORE** to a private Orthanc, and (second leg)
**STOW-RS** to the same Orthanc's DICOMweb plugin (``kind = "dicomweb"``,
``confirm = "response"``). The figure is the peak resident set (``VmHWM``,
sampled every 10 ms from ``/proc/PID/status``) of the ``dermgate run`` process,
from start until the ledger says the stack is SENT; a fresh gateway and an emptied
Orthanc for each size and leg. *Baseline*: the same process's ``VmHWM`` once it
logged ``running as`` and before the simulator starts (imports, ledger, stages: the
idle figure another part of issue 16 cuts); *growth* is peak minus baseline, what
the stack itself costs.

*Anchor*: DCMTK's ``dcmsend`` sending the same 1 GB DICOM file the gateway wrote
(its peak RSS, sampled the same way): what a C tool needs for the last hop alone.

Targets (issue 16, goal 6): gateway peak at 1 GB ≤ 80 MB and ≤ 1.1× its peak at
20 MB, for each leg. Times are for reading only.

Run: ``.venv/bin/python bench/confocal_memory.py [--small-mb 20] [--large-mb 1000]
[--legs cstore,stow] [--keep]``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import (
    DERMGATE,
    bench_dir,
    count_in_states,
    gateway_config,
    print_header,
    ratio,
    require_tools,
    stop_process,
)

from gateway.demo.local_orthanc import ORTHANC_BINARY, OrthancProcess, free_port

FRAME_SIDE = 1024
BITS = 8  # Confocal Microscopy objects take 8-bit pixels (16-bit stacks go as Word SC)
FRAME_MB = FRAME_SIDE * FRAME_SIDE * BITS / 8 / 1e6
GROWTH_TARGET = 1.1
PEAK_TARGET_MB = 80.0
TIMEOUT = 1200.0
DICOMWEB_PLUGIN = "libOrthancDicomWeb.so"
LEGS = {"cstore": "C-STORE", "stow": "STOW-RS"}


@dataclass(frozen=True)
class Measured:
    """Peak RSS (MB), the baseline before the stack (MB) and wall time (s) of one process."""

    peak_mb: float
    seconds: float
    baseline_mb: float = 0.0

    @property
    def growth_mb(self) -> float:
        """What the stack added above the idle process."""
        return self.peak_mb - self.baseline_mb


def _peak_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def destination_for(leg: str, orthanc: OrthancProcess) -> dict[str, str | int | bool]:
    """The gateway's one destination for a leg: C-STORE or STOW-RS to ``orthanc``."""
    if leg == "stow":
        return {
            "name": "web",
            "kind": "dicomweb",
            "url": f"{orthanc.url}/dicom-web",
            "confirm": "response",
            "request_timeout": 900,
        }
    return {
        "name": "pacs",
        "kind": "dicom",
        "ae_title": orthanc.aet,
        "host": "127.0.0.1",
        "port": orthanc.dicom_port,
        "storage_commitment": False,
    }


def _wait_running(log_path: Path, gateway: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.perf_counter() + 60
    while b"running as" not in log_path.read_bytes():
        if gateway.poll() is not None or time.perf_counter() > deadline:
            sys.exit(f"{name}: the gateway did not start; see {log_path}")
        time.sleep(0.02)


def gateway_take(
    work: Path, orthanc: OrthancProcess, frames: int, name: str, leg: str
) -> tuple[Measured, Path]:
    """Simulator → gateway → Orthanc for one stack; the gateway's peak RSS and its DICOM file."""
    folder = work / name
    folder.mkdir()
    sock = folder / "rcm.sock"
    state_dir = folder / "state"
    config = folder / "dermgate.toml"
    config.write_text(
        gateway_config(
            state_dir,
            listen_port=free_port(),
            destination=destination_for(leg, orthanc),
            device={
                "driver": "usb-confocal",
                "name": "rcm",
                "usb_backend": f"emulated:{sock}",
                "reconnect_max": 1,
            },
        ),
        encoding="utf-8",
    )
    started = time.perf_counter()
    log_path = folder / "gateway.log"
    with log_path.open("wb") as log:
        gateway = subprocess.Popen(
            [str(DERMGATE), "run", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    simulator: subprocess.Popen[bytes] | None = None
    ledger = state_dir / "ledger.sqlite3"
    try:
        _wait_running(log_path, gateway, name)
        time.sleep(0.5)  # the stages settle (the driver looks for its device)
        baseline_kb = _peak_kb(gateway.pid)
        simulator = subprocess.Popen(
            [str(DERMGATE), "simulate", "usb-confocal", "--socket", str(sock), "--stacks", "1",
             "--frames", str(frames), "--size", f"{FRAME_SIDE}x{FRAME_SIDE}", "--bits", str(BITS),
             "--timeout", str(TIMEOUT)],
            stdout=subprocess.DEVNULL,
            stderr=(folder / "simulator.log").open("wb"),
        )  # fmt: skip
        peak_kb = baseline_kb
        while count_in_states(ledger, ["SENT", "COMMITTED"]) < 1:
            if gateway.poll() is not None or time.perf_counter() - started > TIMEOUT:
                sys.exit(f"{name}: the stack did not reach the PACS; see {log_path}")
            peak_kb = max(peak_kb, _peak_kb(gateway.pid))
            time.sleep(0.01)
        peak_kb = max(peak_kb, _peak_kb(gateway.pid))
        seconds = time.perf_counter() - started
    finally:
        stop_process(gateway)
        if simulator is not None:
            stop_process(simulator)
    files = list((state_dir / "spool" / "dicom").glob("*.dcm"))
    if len(files) != 1 or orthanc.count_instances() != 1:
        sys.exit(f"{name}: expected one DICOM file and one instance in Orthanc")
    return Measured(peak_kb / 1024, seconds, baseline_kb / 1024), files[0]


def dcmsend_peak(path: Path, orthanc: OrthancProcess) -> Measured:
    """dcmsend's peak RSS sending ``path``."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        ["dcmsend", "-aet", "DERMGATE", "-aec", orthanc.aet, "127.0.0.1",
         str(orthanc.dicom_port), str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    peak_kb = 0
    while proc.poll() is None:
        peak_kb = max(peak_kb, _peak_kb(proc.pid))
        time.sleep(0.01)
    if proc.returncode != 0:
        sys.exit(f"dcmsend failed (exit {proc.returncode})")
    return Measured(peak_kb / 1024, time.perf_counter() - started)


def empty(orthanc: OrthancProcess) -> None:
    """Delete every instance Orthanc holds."""
    for instance in orthanc.rest("GET", "/instances"):
        orthanc.rest("DELETE", f"/instances/{instance}")


def verdict(value: float, target: float, unit: str) -> str:
    """ "met", or "MISSED by ..." (how far over the target)."""
    if value <= target:
        return "met"
    return f"MISSED by {value - target:.1f}{unit} ({value / target:.2f}x the target)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small-mb", type=float, default=20.0, help="small stack (MB)")
    parser.add_argument("--large-mb", type=float, default=1000.0, help="large stack (MB)")
    parser.add_argument("--legs", default="cstore,stow", help="cstore, stow or both")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    legs = [leg for leg in args.legs.split(",") if leg]
    if not legs or any(leg not in LEGS for leg in legs):
        sys.exit(f"--legs takes {', '.join(LEGS)}")
    require_tools(["dcmsend"])
    if not ORTHANC_BINARY.exists():
        sys.exit(f"Orthanc not found at {ORTHANC_BINARY} (scripts/setup.sh installs it)")
    frames = {
        "small": max(1, round(args.small_mb / FRAME_MB)),
        "large": max(1, round(args.large_mb / FRAME_MB)),
    }
    print_header(
        "confocal memory: peak RSS of dermgate run taking one stack, small vs large",
        [
            f"stacks: z-stacks of {FRAME_SIDE}x{FRAME_SIDE} {BITS}-bit frames, "
            f"{frames['small']} frames ({frames['small'] * FRAME_MB:.0f} MB) and "
            f"{frames['large']} frames ({frames['large'] * FRAME_MB:.0f} MB); simulator → "
            "emulated USB → driver → intake writes the DICOM file → "
            + " / ".join(f"{LEGS[leg]} to Orthanc" for leg in legs),
        ],
    )
    results: dict[tuple[str, str], Measured] = {}
    with bench_dir("dermgate-bench-confocal-", keep=args.keep) as work:
        needed = 3 * (args.small_mb + args.large_mb) * 1e6
        if shutil.disk_usage(work).free < needed:
            sys.exit(f"needs {needed / 1e9:.1f} GB free in {work.parent}")
        orthanc = OrthancProcess(
            work / "orthanc",
            plugins=(DICOMWEB_PLUGIN,),
            extra={"DicomWeb": {"Enable": True, "Root": "/dicom-web/"}},
        )
        orthanc.start()
        anchor: Measured | None = None
        try:
            for leg in legs:
                for key in ("small", "large"):
                    empty(orthanc)
                    name = f"{leg}-{key}"
                    results[leg, key], written = gateway_take(work, orthanc, frames[key], name, leg)
                    if anchor is None and key == "large":
                        empty(orthanc)
                        anchor = dcmsend_peak(written, orthanc)
                    if not args.keep:  # 1 GB each: one leg's files at a time
                        shutil.rmtree(work / name, ignore_errors=True)
        finally:
            orthanc.stop()
    assert anchor is not None

    print()
    for leg in legs:
        for key in ("small", "large"):
            m = results[leg, key]
            size = frames[key] * FRAME_MB
            print(
                f"gateway {LEGS[leg]:<7}, {size:>6.0f} MB stack: peak RSS {m.peak_mb:6.1f} MB "
                f"(baseline {m.baseline_mb:5.1f} MB, growth {m.growth_mb:+5.1f} MB), "
                f"{m.seconds:6.1f} s device to PACS ({size / m.seconds:.0f} MB/s)"
            )
    print(
        f"dcmsend (anchor), {frames['large'] * FRAME_MB:.0f} MB file: "
        f"peak RSS {anchor.peak_mb:.1f} MB"
    )
    for leg in legs:
        large, small = results[leg, "large"], results[leg, "small"]
        growth = large.peak_mb / small.peak_mb
        name = LEGS[leg]
        print(
            f"ratio gateway {name} large/small peak:          "
            f"{ratio(large.peak_mb, small.peak_mb)}  "
            f"(target <= {GROWTH_TARGET}x: {verdict(growth, GROWTH_TARGET, 'x')})"
        )
        print(
            f"ratio gateway {name}/dcmsend peak, large stack: "
            f"{ratio(large.peak_mb, anchor.peak_mb)}"
        )
        print(
            f"peak gateway {name}, large stack:               {large.peak_mb:.1f} MB  "
            f"(target <= {PEAK_TARGET_MB:.0f} MB: {verdict(large.peak_mb, PEAK_TARGET_MB, ' MB')})"
        )
        print(
            f"growth above baseline, {name}: small {small.growth_mb:+.1f} MB, large "
            f"{large.growth_mb:+.1f} MB (the stack's own cost; the rest is the idle process)"
        )


if __name__ == "__main__":
    main()
