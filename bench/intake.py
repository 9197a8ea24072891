"""Intake: captures per second from device bytes to a WRAPPED DICOM file, against ``img2dcm``.

Gateway, in process (the main figure): the real ``Intake``, ``Ledger`` and ``Wrapper``
in one asyncio program, fed like a single dermatoscope feeds them: for each capture
``Intake.begin`` → ``sink.write`` in 32 KiB chunks (the serial protocol's
CAPTURE_DATA size) → ``sink.commit(length, sha256)``, one capture after the other,
while the wrapping stage runs beside it. The clock stops when the N-th capture is
WRAPPED. That includes the staging write, the fsyncs of file and folders, the ledger
commits (SQLite WAL, synchronous=FULL), the header read, the builder and the atomic
Part 10 write.

Gateway, real path (secondary): ``dermgate run`` with a serial-dermatoscope device and
``dermgate simulate serial-dermatoscope --interval 0`` on a pty; from the process start
until the ledger says all are WRAPPED. The pty and the simulator (which synthesises
each image when it offers it) dominate that figure.

Anchor: DCMTK ``img2dcm -vlp -df TEMPLATE in.jpg out.dcm`` once per JPEG (VL
Photographic, the closest IOD DCMTK 3.6.7 writes; the template carries the same
equipment and dermoscopy attributes), plain and with its output fsynced.

Run: ``.venv/bin/python bench/intake.py [--count 30]``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import hashlib
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any, TypeVar

from common import (
    DERMGATE,
    DEVICE,
    DRIVER,
    GATEWAY,
    TestImages,
    bench_dir,
    count_in_states,
    gateway_config,
    make_images,
    print_header,
    ratio,
    require_tools,
    run_gateway_until,
    stop_process,
)
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID, ExplicitVRLittleEndian

from drivers.serial_dermatoscope.protocol import DATA_CHUNK
from gateway.core.capture import CaptureOffer, InstanceUIDs
from gateway.core.uids import new_uid
from gateway.demo.local_orthanc import free_port
from gateway.dicom.dermoscopy import build_dermoscopic_photography
from gateway.dicom.jpeg import read_jpeg_info
from gateway.intake import InlineWrap, Intake
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import Ledger
from gateway.spool.spool_ids import SpoolIdCounter, high_water_path
from gateway.wrap import Wrapper

T = TypeVar("T")
WRAPPED_OR_LATER = ("WRAPPED", "SENT", "COMMITTED")
DESTINATION = "pacs"


# --------------------------------------------------------------------------- meters


class FsyncMeter:
    """Counts ``os.fsync`` calls made from Python (not SQLite's own) and their time."""

    def __init__(self) -> None:
        self.calls = 0
        self.seconds = 0.0
        self._lock = threading.Lock()
        self._original = os.fsync

    def __enter__(self) -> FsyncMeter:
        original = self._original

        def fsync(fd: Any) -> None:
            started = time.perf_counter()
            try:
                original(fd)
            finally:
                with self._lock:
                    self.calls += 1
                    self.seconds += time.perf_counter() - started

        os.fsync = fsync
        return self

    def __exit__(self, *exc: object) -> None:
        os.fsync = self._original


class CountingLedger(Ledger):
    """The real ledger thread, counting its calls by function and their time."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.calls: Counter[str] = Counter()
        self.seconds: dict[str, float] = {}

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the ledger thread as :class:`Ledger` does, and count it."""
        started = time.perf_counter()
        try:
            return await super().call(fn, *args, **kwargs)
        finally:
            name = getattr(fn, "__name__", "?")
            self.calls[name] += 1
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


# --------------------------------------------------------------------------- gateway in process


@dataclass
class InProcessResult:
    """Timings of the in-process intake run."""

    acked_at: float
    wrapped_at: float
    ack_latencies: list[float]
    fsyncs: int
    fsync_seconds: float
    ledger_calls: Counter[str] = field(default_factory=Counter)
    ledger_seconds: dict[str, float] = field(default_factory=dict)


async def intake_in_process(
    state_dir: Path, images: TestImages, count: int, timeout: float
) -> InProcessResult:
    """Feed ``count`` captures through Intake while Wrapper runs; time until all WRAPPED."""
    payloads = []
    for path in images.paths:
        data = path.read_bytes()
        payloads.append((data, hashlib.sha256(data).hexdigest()))
    dirs = SpoolDirs(state_dir / "spool")
    dirs.create()
    ledger = CountingLedger(state_dir / "ledger.sqlite3")
    ledger.start()
    wrapped = 0
    all_wrapped = asyncio.Event()

    def on_wrapped() -> None:
        nonlocal wrapped
        wrapped += 1
        if wrapped >= count:
            all_wrapped.set()

    wrapper = Wrapper(ledger, dirs, GATEWAY, [DESTINATION], on_wrapped)
    # As gateway.service.app wires it: a JPEG the builder can describe goes straight into its
    # DICOM file at intake (one copy); anything else goes through raw/ and the wrapper.
    inline = InlineWrap(GATEWAY, wrapper.destinations, on_wrapped)
    # Spool ids from the box's high-water mark, as the service takes them (no ledger
    # query per capture).
    spool_ids = SpoolIdCounter.open(high_water_path(state_dir), 0)
    intake = Intake(ledger, dirs, wrapper.notify, None, inline, spool_ids=spool_ids)
    latencies: list[float] = []
    try:
        with FsyncMeter() as fsyncs:
            async with asyncio.TaskGroup() as group:
                ready = asyncio.Event()
                wrapping = group.create_task(wrapper.run(ready.set), name="wrap")
                await ready.wait()
                started = time.perf_counter()
                for index in range(count):
                    data, sha256 = payloads[index % len(payloads)]
                    begun = time.perf_counter()
                    offer = CaptureOffer(device_capture_id=f"{index:06d}", length=len(data))
                    sink = await intake.begin(DRIVER, DEVICE, offer)
                    for offset in range(0, len(data), DATA_CHUNK):
                        await sink.write(data[offset : offset + DATA_CHUNK])
                    await sink.commit(length=len(data), sha256=sha256)
                    latencies.append(time.perf_counter() - begun)
                acked_at = time.perf_counter() - started
                await asyncio.wait_for(all_wrapped.wait(), timeout)
                wrapped_at = time.perf_counter() - started
                wrapping.cancel()
    finally:
        await asyncio.to_thread(ledger.close)
    in_ledger = count_in_states(state_dir / "ledger.sqlite3", WRAPPED_OR_LATER)
    if in_ledger != count:
        raise RuntimeError(f"ledger holds {in_ledger} WRAPPED captures, expected {count}")
    return InProcessResult(
        acked_at,
        wrapped_at,
        latencies,
        fsyncs.calls,
        fsyncs.seconds,
        ledger.calls,
        ledger.seconds,
    )


# --------------------------------------------------------------------------- gateway on a pty


@dataclass
class PtyResult:
    """Timings of ``dermgate run`` with the simulator on a pty."""

    wrapped_at: float
    running_at: float


def intake_over_pty(work: Path, images: TestImages, count: int, timeout: float) -> PtyResult:
    """``dermgate run`` + ``dermgate simulate``; seconds from start to all WRAPPED."""
    work.mkdir(parents=True)
    link = work / "ttyDERM0"
    state_dir = work / "state"
    config = work / "dermgate.toml"
    config.write_text(
        gateway_config(
            state_dir,
            listen_port=free_port(),
            # `run` needs a destination; nothing listens there (captures stay WRAPPED).
            destination={
                "name": DESTINATION,
                "kind": "dicom",
                "ae_title": "PACS",
                "host": "127.0.0.1",
                "port": free_port(),
                "storage_commitment": False,
            },
            device={"driver": DRIVER, "port": str(link)},
        ),
        encoding="utf-8",
    )
    with open(work / "simulator.log", "wb") as sim_log:
        simulator = subprocess.Popen(
            [
                str(DERMGATE),
                "simulate",
                DRIVER,
                "--link",
                str(link),
                "--captures",
                str(count),
                "--interval",
                "0",
                "--width",
                str(images.width),
                "--height",
                str(images.height),
                "--timeout",
                str(timeout),
            ],
            stdout=subprocess.DEVNULL,
            stderr=sim_log,
        )
        try:
            deadline = time.monotonic() + 30
            while not link.exists():
                if simulator.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"simulator did not create {link}; see simulator.log")
                time.sleep(0.02)
            run = run_gateway_until(
                config,
                state_dir / "ledger.sqlite3",
                wanted=count,
                states=WRAPPED_OR_LATER,
                timeout=timeout,
                log_path=work / "gateway.log",
            )
        finally:
            stop_process(simulator, grace=10)
    if run.done_at is None:
        tail = "\n".join(line for _, line in run.log_lines[-15:])
        raise RuntimeError(f"gateway did not wrap {count} captures in {timeout:.0f} s:\n{tail}")
    return PtyResult(run.done_at, run.running_at or 0.0)


# --------------------------------------------------------------------------- anchor


def write_template(images: TestImages, dest: Path) -> None:
    """An img2dcm ``-df`` template: our header minus what img2dcm derives from the JPEG."""
    dataset = build_dermoscopic_photography(
        identity=DEVICE,
        offer=CaptureOffer(device_capture_id="template"),
        uids=InstanceUIDs(study=new_uid(), series=new_uid(), sop_instance=new_uid()),
        jpeg=read_jpeg_info(images.paths[0]),
        gateway=GATEWAY,
        patient=None,
        now=datetime.now(UTC),
    )
    template = copy.deepcopy(dataset)
    template.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for keyword in (
        "SOPClassUID",
        "SOPInstanceUID",
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "PlanarConfiguration",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "LossyImageCompression",
        "LossyImageCompressionRatio",
        "LossyImageCompressionMethod",
    ):
        if keyword in template:
            delattr(template, keyword)
    template.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    template.file_meta.MediaStorageSOPInstanceUID = UID(new_uid())
    dcmwrite(dest, template, enforce_file_format=True)


def fsync_path(path: Path) -> None:
    """fsync a file or a folder."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def time_img2dcm(
    out_dir: Path, images: TestImages, count: int, template: Path, durable: bool
) -> float:
    """Seconds for one ``img2dcm`` per capture, one after the other."""
    out_dir.mkdir(parents=True)
    started = time.perf_counter()
    for index in range(count):
        dest = out_dir / f"{index:06d}.dcm"
        subprocess.run(
            [
                "img2dcm",
                "-q",
                "-vlp",
                "-df",
                str(template),
                str(images.for_capture(index)),
                str(dest),
            ],
            check=True,
        )
        if durable:
            fsync_path(dest)
            fsync_path(out_dir)
    return time.perf_counter() - started


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print captures/s and the ratio gateway/img2dcm."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=30, help="captures (default 30)")
    parser.add_argument("--size-mb", type=float, default=7.0, help="JPEG size in MB (default 7)")
    parser.add_argument(
        "--distinct", type=int, default=4, help="distinct images, cycled (default 4)"
    )
    parser.add_argument(
        "--pty-count",
        type=int,
        default=10,
        help="captures through dermgate run + simulator on a pty (default 10; 0 skips)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="per side, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    require_tools(["img2dcm"])
    if not DERMGATE.exists():
        sys.exit(f"need {DERMGATE} (scripts/setup.sh)")

    with bench_dir("dermgate-bench-intake-", keep=args.keep) as work:
        images = make_images(work / "jpeg", min(args.count, args.distinct), args.size_mb)
        mean_mb = images.mean_mb(args.count)
        print_header(
            "intake: device bytes -> WRAPPED DICOM file, gateway vs img2dcm",
            [
                f"captures: {args.count} x {mean_mb:.2f} MB JPEG ({images.width}x{images.height}"
                f" 4:2:0, {len(images.paths)} distinct, cycled); one device, one capture "
                f"at a time, {DATA_CHUNK // 1024} KiB chunks",
            ],
        )
        template = work / "template.dcm"
        write_template(images, template)

        plain = time_img2dcm(work / "img2dcm", images, args.count, template, durable=False)
        durable = time_img2dcm(work / "img2dcm-fsync", images, args.count, template, durable=True)
        result = asyncio.run(intake_in_process(work / "inproc", images, args.count, args.timeout))
        pty: PtyResult | None = None
        if args.pty_count > 0:
            pty = intake_over_pty(work / "pty", images, args.pty_count, args.timeout)

        def rate(n: int, seconds: float) -> float:
            return n / seconds if seconds > 0 else float("inf")

        anchor = rate(args.count, plain)
        anchor_durable = rate(args.count, durable)
        gateway = rate(args.count, result.wrapped_at)
        acked = rate(args.count, result.acked_at)
        print()
        print(f"img2dcm:                          {anchor:7.1f} captures/s")
        print(f"img2dcm + fsync output:           {anchor_durable:7.1f} captures/s")
        print(
            f"gateway in process, ACKed:        {acked:7.1f} captures/s  (ACK latency median "
            f"{median(result.ack_latencies) * 1000:.0f} ms, max "
            f"{max(result.ack_latencies) * 1000:.0f} ms)"
        )
        print(f"gateway in process, WRAPPED:      {gateway:7.1f} captures/s")
        if pty is not None:
            pty_rate = rate(args.pty_count, pty.wrapped_at)
            after = rate(args.pty_count, pty.wrapped_at - pty.running_at)
            print(
                f"gateway over pty ({args.pty_count} captures):    {pty_rate:7.1f} captures/s  "
                f"({after:.2f}/s after start-up {pty.running_at:.2f} s; the simulator spends "
                f"~{images.seconds_each:.2f} s synthesising each image)"
            )
        print(
            f"fsync from Python per capture:    {result.fsyncs / args.count:.1f} "
            f"({result.fsync_seconds / args.count * 1000:.1f} ms); SQLite's own not counted"
        )
        calls = ", ".join(
            f"{name} {result.ledger_calls[name] / args.count:.1f} "
            f"({result.ledger_seconds[name] / args.count * 1000:.1f} ms)"
            for name in sorted(result.ledger_calls)
        )
        print(f"ledger calls per capture:         {calls}")
        print(f"ratio gateway/img2dcm:            {ratio(gateway, anchor)}  (target >= 3x)")
        print(f"ratio gateway/img2dcm+fsync:      {ratio(gateway, anchor_durable)}")
        if gateway < 3 * anchor:
            print(
                f"GOAL MISSED: {gateway / anchor:.2f}x is {3 - gateway / anchor:.2f} below the "
                f"3x target ({3 * anchor - gateway:.1f} captures/s short)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
