"""Memory: peak RSS of the process sending a 20 MB and a 1 GB object, against ``dcmsend``.

Each sender runs alone in a child process and sends one Dermoscopic Photography
object (made by the project's own builder: a real JPEG padded after its End Of
Image marker to the wanted size) to a private Orthanc; its peak resident set size is
``VmHWM`` of that child: the Python senders print their own from
``/proc/self/status`` as they end; ``dcmsend``'s is sampled from ``/proc/PID/status``
every 10 ms while it runs. (Not ``ru_maxrss`` from ``wait4``/``RUSAGE_CHILDREN``:
Linux carries the parent's peak across ``fork``/``exec`` into the child's, so every
child would show at least this script's own ~70 MB.) The instance is checked to be in
Orthanc and deleted after each send, so every send finds the same empty PACS.

Senders:

- *gateway*: ``CStoreSender.send_batch`` as the forwarder calls it (paced by
  ``gateway.forward.stream``);
- *gateway unpaced*: the same with ``stream_c_store`` replaced by a no-op, i.e.
  pynetdicom's own chunked send (``STORE_SEND_CHUNKED_DATASET``), what DESIGN §6
  measured;
- *anchor*: DCMTK's ``dcmsend``.

The targets (issue "chain of custody", item 6): gateway peak at 1 GB ≤ 1.2× its peak
at 20 MB, and under 150 MB. Times are printed for reading only (child process wall
time, Python start-up included).

Run: ``.venv/bin/python bench/memory.py [--small-mb 20] [--large-mb 1000] [--keep]``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from common import DEVICE, GATEWAY, bench_dir, print_header, ratio, require_tools

from drivers.serial_dermatoscope.images import make_dermoscopy_jpeg
from gateway.core.capture import CaptureOffer, InstanceUIDs
from gateway.core.uids import new_uid
from gateway.demo.local_orthanc import ORTHANC_BINARY, OrthancProcess
from gateway.dicom.dermoscopy import build_dermoscopic_photography
from gateway.dicom.jpeg import read_jpeg_info
from gateway.dicom.part10 import write_part10_encapsulated

PEAK_TARGET_MB = 150.0
GROWTH_TARGET = 1.2
CHILD_TIMEOUT = 600.0

# One instance from a child process, the way the forwarder sends it.
SENDER = """
import sys, threading
from pathlib import Path
from gateway.core.config import DicomDestination
import gateway.forward.cstore as cstore
path, port, sop_class, syntax, paced = sys.argv[1:]
if paced != "paced":
    cstore.stream_c_store = lambda assoc, **kwargs: None
destination = DicomDestination(
    name="pacs", kind="dicom", ae_title="ORTHANC", host="127.0.0.1", port=int(port)
)
request = cstore.StoreRequest(1, Path(path), sop_class, syntax)
[outcome] = cstore.CStoreSender("DERMGATE", destination).send_batch([request], threading.Event())
status = Path("/proc/self/status").read_text().splitlines()
[peak_kb] = [line.split()[1] for line in status if line.startswith("VmHWM:")]
print(outcome.verdict.value, outcome.detail)
print("peak_kb", peak_kb)
sys.exit(0 if outcome.verdict.delivered else 1)
"""


@dataclass(frozen=True)
class Instance:
    """A Part 10 file to send and what identifies it."""

    path: Path
    size: int
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str


@dataclass(frozen=True)
class Measured:
    """One child process: its peak RSS and how long it ran."""

    peak_mb: float
    seconds: float


def build_instance(folder: Path, size_mb: float, name: str) -> Instance:
    """A Dermoscopic Photography file of about ``size_mb`` MB (10^6 bytes)."""
    jpeg = folder / f"{name}.jpg"
    with jpeg.open("wb") as out:
        out.write(make_dermoscopy_jpeg(1, width=640, height=480))
        out.truncate(int(size_mb * 1e6))  # padding after End Of Image, sparse on disk
    uids = InstanceUIDs(study=new_uid(), series=new_uid(), sop_instance=new_uid())
    dataset = build_dermoscopic_photography(
        identity=DEVICE,
        offer=CaptureOffer(device_capture_id=name),
        uids=uids,
        jpeg=read_jpeg_info(jpeg),
        gateway=GATEWAY,
        patient=None,
        now=datetime.now(UTC),
        series_number=1,
        instance_number=1,
    )
    dest = folder / f"{name}.dcm"
    size = write_part10_encapsulated(dataset, jpeg, dest)
    jpeg.unlink()
    return Instance(
        dest,
        size,
        uids.sop_instance,
        str(dataset.SOPClassUID),
        str(dataset.file_meta.TransferSyntaxUID),
    )


def _peak_kb(pid: int) -> int:
    """``VmHWM`` of a running process in KiB; 0 once it has exited."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0  # a zombie: its memory is gone


def measure(argv: list[str], log: Path) -> Measured:
    """Run ``argv`` to completion and return its peak RSS and run time. Exits on failure."""
    started = time.perf_counter()
    with log.open("wb") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
    peak_kb = 0
    while proc.poll() is None:
        peak_kb = max(peak_kb, _peak_kb(proc.pid))
        if time.perf_counter() - started > CHILD_TIMEOUT:
            proc.kill()
            proc.wait()
            sys.exit(f"{argv[0]} did not finish within {CHILD_TIMEOUT:.0f} s; see {log}")
        time.sleep(0.01)
    seconds = time.perf_counter() - started
    output = log.read_text(encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        sys.exit(f"{argv[0]} failed (exit {proc.returncode}):\n{output[-2000:]}")
    for line in output.splitlines():
        if line.startswith("peak_kb "):
            peak_kb = max(peak_kb, int(line.split()[1]))
    return Measured(peak_kb / 1024, seconds)


def send(sender: str, instance: Instance, orthanc: OrthancProcess, log: Path) -> Measured:
    """Send ``instance`` with ``sender``, check Orthanc has it, then delete it there."""
    if sender == "dcmsend":
        argv = ["dcmsend", "-aet", "DERMGATE", "-aec", "ORTHANC"]
        argv += ["127.0.0.1", str(orthanc.dicom_port), str(instance.path)]
    else:
        argv = [sys.executable, "-c", SENDER, str(instance.path), str(orthanc.dicom_port)]
        argv += [instance.sop_class_uid, instance.transfer_syntax_uid, sender]
    measured = measure(argv, log)
    stored = orthanc.find_instances(instance.sop_instance_uid)
    if len(stored) != 1:
        sys.exit(f"{sender}: Orthanc holds {len(stored)} copies of the instance; see {log}")
    orthanc.rest("DELETE", f"/instances/{stored[0]}")
    return measured


SENDERS = {
    "paced": "gateway (CStoreSender)",
    "unpaced": "gateway unpaced (pynetdicom)",
    "dcmsend": "dcmsend (anchor)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small-mb", type=float, default=20.0, help="small object (MB)")
    parser.add_argument("--large-mb", type=float, default=1000.0, help="large object (MB)")
    parser.add_argument("--no-unpaced", action="store_true", help="skip pynetdicom unpaced")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    require_tools(["dcmsend"])
    if not ORTHANC_BINARY.exists():
        sys.exit(f"Orthanc not found at {ORTHANC_BINARY} (scripts/setup.sh installs it)")
    senders = [s for s in SENDERS if not (args.no_unpaced and s == "unpaced")]

    print_header(
        "memory: peak RSS of the sending process, small vs large object",
        [
            f"objects: Dermoscopic Photography, {args.small_mb:g} MB and {args.large_mb:g} MB"
            " (real JPEG padded after EOI); one C-STORE per child process, Orthanc emptied"
            " after each",
        ],
    )
    with bench_dir("dermgate-bench-memory-", keep=args.keep) as work:
        needed = 2 * (args.small_mb + args.large_mb) * 1e6
        if shutil.disk_usage(work).free < needed:
            sys.exit(f"needs {needed / 1e9:.1f} GB free in {work.parent}")
        sizes = {"small": args.small_mb, "large": args.large_mb}
        instances = {key: build_instance(work, mb, key) for key, mb in sizes.items()}
        orthanc = OrthancProcess(work / "orthanc")
        orthanc.start()
        results: dict[tuple[str, str], Measured] = {}
        try:
            for key, instance in instances.items():
                for sender in senders:
                    log = work / f"{sender}-{key}.log"
                    results[(sender, key)] = send(sender, instance, orthanc, log)
        finally:
            orthanc.stop()

    print()
    print(f"{'object':>10}  {'sender':<30} {'peak RSS':>10} {'time':>8} {'rate':>11}")
    for key, instance in instances.items():
        for sender in senders:
            m = results[(sender, key)]
            rate = instance.size / 1e6 / m.seconds
            print(
                f"{instance.size / 1e6:>7.0f} MB  {SENDERS[sender]:<30} "
                f"{m.peak_mb:>7.1f} MB {m.seconds:>6.1f} s {rate:>6.1f} MB/s"
            )
    print()
    for sender in senders:
        growth = ratio(results[(sender, "large")].peak_mb, results[(sender, "small")].peak_mb)
        print(f"ratio large/small peak, {SENDERS[sender]:<30} {growth}")
    gateway_large = results[("paced", "large")].peak_mb
    anchor_large = results[("dcmsend", "large")].peak_mb
    print(
        f"ratio gateway/dcmsend peak at {args.large_mb:g} MB:{'':<17} "
        f"{ratio(gateway_large, anchor_large)}"
    )
    growth_value = gateway_large / results[("paced", "small")].peak_mb
    verdict = (
        "met" if growth_value <= GROWTH_TARGET and gateway_large < PEAK_TARGET_MB else "MISSED"
    )
    print(
        f"target: gateway large/small <= {GROWTH_TARGET}x and < {PEAK_TARGET_MB:.0f} MB: "
        f"{verdict} ({growth_value:.2f}x, {gateway_large:.0f} MB)"
    )


if __name__ == "__main__":
    main()
