"""Confocal memory: peak RSS of the gateway taking a 20 MB and a 1 GB confocal stack.

The whole way is exercised: the RCM-1 simulator (its own process) streams one
z-stack of 1024 × 1024 8-bit frames over the emulated USB backend → the
``usb-confocal`` driver → the spool (raw pixels, fsynced) → the Confocal
Microscopy writer (Part 10, pixels copied in 1 MiB chunks) → C-STORE to a private
Orthanc. The figure is the peak resident set (``VmHWM``, sampled every 10 ms from
``/proc/PID/status``) of the ``dermgate run`` process, from start until the ledger
says the stack is SENT; a fresh gateway and an emptied Orthanc for each size.

*Anchor*: DCMTK's ``dcmsend`` sending the same 1 GB DICOM file the gateway wrote
(its peak RSS, sampled the same way): what a C tool needs for the last hop alone.

Target (issue 5, item 3, "flat memory"): gateway peak at 1 GB ≤ 1.2× its peak at
20 MB. Times are for reading only.

Run: ``.venv/bin/python bench/confocal_memory.py [--small-mb 20] [--large-mb 1000] [--keep]``.
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
GROWTH_TARGET = 1.2
TIMEOUT = 1200.0


@dataclass(frozen=True)
class Measured:
    """Peak RSS (MB) and wall time (s) of one process."""

    peak_mb: float
    seconds: float


def _peak_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def gateway_take(
    work: Path, orthanc: OrthancProcess, frames: int, name: str
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
            destination={
                "name": "pacs",
                "kind": "dicom",
                "ae_title": orthanc.aet,
                "host": "127.0.0.1",
                "port": orthanc.dicom_port,
                "storage_commitment": False,
            },
            device={
                "driver": "usb-confocal",
                "name": "rcm",
                "usb_backend": f"emulated:{sock}",
                "reconnect_max": 1,
            },
        ),
        encoding="utf-8",
    )
    simulator = subprocess.Popen(
        [str(DERMGATE), "simulate", "usb-confocal", "--socket", str(sock), "--stacks", "1",
         "--frames", str(frames), "--size", f"{FRAME_SIDE}x{FRAME_SIDE}", "--bits", str(BITS),
         "--timeout", str(TIMEOUT)],
        stdout=subprocess.DEVNULL,
        stderr=(folder / "simulator.log").open("wb"),
    )  # fmt: skip
    started = time.perf_counter()
    with (folder / "gateway.log").open("wb") as log:
        gateway = subprocess.Popen(
            [str(DERMGATE), "run", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    peak_kb = 0
    ledger = state_dir / "ledger.sqlite3"
    try:
        while count_in_states(ledger, ["SENT", "COMMITTED"]) < 1:
            if gateway.poll() is not None or time.perf_counter() - started > TIMEOUT:
                sys.exit(f"{name}: the stack did not reach the PACS; see {folder}/gateway.log")
            peak_kb = max(peak_kb, _peak_kb(gateway.pid))
            time.sleep(0.01)
        peak_kb = max(peak_kb, _peak_kb(gateway.pid))
        seconds = time.perf_counter() - started
    finally:
        stop_process(gateway)
        stop_process(simulator)
    files = list((state_dir / "spool" / "dicom").glob("*.dcm"))
    if len(files) != 1 or orthanc.count_instances() != 1:
        sys.exit(f"{name}: expected one DICOM file and one instance in Orthanc")
    return Measured(peak_kb / 1024, seconds), files[0]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small-mb", type=float, default=20.0, help="small stack (MB)")
    parser.add_argument("--large-mb", type=float, default=1000.0, help="large stack (MB)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
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
            "emulated USB → driver → spool → Confocal Microscopy DICOM → C-STORE to Orthanc",
        ],
    )
    with bench_dir("dermgate-bench-confocal-", keep=args.keep) as work:
        needed = 4 * (args.small_mb + args.large_mb) * 1e6
        if shutil.disk_usage(work).free < needed:
            sys.exit(f"needs {needed / 1e9:.1f} GB free in {work.parent}")
        orthanc = OrthancProcess(work / "orthanc")
        orthanc.start()
        try:
            results: dict[str, Measured] = {}
            files: dict[str, Path] = {}
            for key in ("small", "large"):
                empty(orthanc)
                results[key], files[key] = gateway_take(work, orthanc, frames[key], key)
            empty(orthanc)
            anchor = dcmsend_peak(files["large"], orthanc)
        finally:
            orthanc.stop()

    print()
    for key in ("small", "large"):
        m = results[key]
        size = frames[key] * FRAME_MB
        print(
            f"gateway, {size:>6.0f} MB stack: peak RSS {m.peak_mb:7.1f} MB, "
            f"{m.seconds:6.1f} s device to PACS ({size / m.seconds:.0f} MB/s)"
        )
    large, small = results["large"].peak_mb, results["small"].peak_mb
    print(
        f"dcmsend (anchor), {frames['large'] * FRAME_MB:.0f} MB file: "
        f"peak RSS {anchor.peak_mb:.1f} MB"
    )
    growth = large / small
    print(f"ratio gateway large/small peak:            {ratio(large, small)}")
    print(f"ratio gateway/dcmsend peak at large size:  {ratio(large, anchor.peak_mb)}")
    verdict = "met" if growth <= GROWTH_TARGET else "MISSED"
    print(f"target: gateway large/small <= {GROWTH_TARGET}x: {verdict} ({growth:.2f}x)")


if __name__ == "__main__":
    main()
