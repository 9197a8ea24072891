"""Camera hot folder: photos dropped into a folder, stored and committed at the PACS.

Gateway: ``dermgate run`` with the demo's camera device (``photo-folder`` driver, every
option at its default) and one destination, a private Orthanc **with Storage
Commitment** (our listener registered in its ``DicomModalities``; every other key at
its default). Once the gateway watches the folder, the clock starts and N camera
photos (EXIF JPEGs as a clinic camera writes them, each a distinct file) are copied
into the folder one after the other, as a card reader's copy does; it stops when the
ledger (read read-only every 20 ms) says every capture is COMMITTED.

Anchor: the pipeline a clinic would script around DCMTK, in the same run, into a
fresh Orthanc of the same configuration: the same copy into a folder, then
``img2dcm -vlp -df TEMPLATE`` for each file (the template of ``bench/intake.py``),
then one ``dcmsend`` of the results. No commitment on that side (DCMTK has none).

Run: ``.venv/bin/python bench/hotfolder.py [--count 30] [--rounds 1]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from statistics import median

from common import (
    DERMGATE,
    TestImages,
    bench_dir,
    check_stored,
    count_in_states,
    gateway_config,
    print_header,
    ratio,
    require_tools,
    stop_process,
)
from intake import write_template

from drivers.photo_folder.offers import PhotoFolderOptions
from drivers.photo_folder.simulator import camera_exif, make_photo
from gateway.demo.local_orthanc import ORTHANC_BINARY, OrthancProcess, free_port

DESTINATION = "pacs"
GATEWAY_AE = "DERMGATE"
SERIAL = "CP24-BENCH"
TARGET = 0.7
_SAVED = re.compile(r"camera: photo photo-([0-9a-f]{32}) saved as spool id")


# --------------------------------------------------------------------------- photos


def _with_exif(jpeg: bytes, exif: bytes) -> bytes:
    """``jpeg`` with its first APP1 (EXIF) segment replaced by ``exif``."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    rest = jpeg[2:]
    if rest[:2] == b"\xff\xe1":
        (length,) = struct.unpack(">H", rest[2:4])
        rest = rest[2 + length :]
    return b"\xff\xd8" + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + rest


def make_card(folder: Path, count: int, distinct: int, width: int, height: int) -> list[Path]:
    """``count`` distinct camera photos (``IMG_0001.JPG`` …) as on a camera's card.

    ``distinct`` pictures are synthesised (about a second each at camera size); each
    photo is one of them with its own EXIF (time taken a second apart), so every file
    has its own content hash, as every real photo does.
    """
    folder.mkdir(parents=True)
    taken = datetime(2026, 11, 30, 9, 0, 0)
    bases = [
        make_photo(seed, width=width, height=height, serial=SERIAL, taken=taken)
        for seed in range(distinct)
    ]
    paths = []
    for index in range(count):
        moment = taken + timedelta(seconds=index)
        exif = camera_exif(SERIAL, moment, index % distinct).tobytes()
        path = folder / f"IMG_{index + 1:04d}.JPG"
        path.write_bytes(_with_exif(bases[index % distinct], exif))
        paths.append(path)
    return paths


def drop(card: Sequence[Path], folder: Path) -> dict[str, float]:
    """Copy the card's photos into ``folder`` one after the other (as a card reader's
    copy does, under their final names); when each copy ended (``time.time()``), by
    the photo's content hash."""
    ended = {}
    for path in card:
        data = path.read_bytes()
        with open(folder / path.name, "wb") as fh:
            fh.write(data)
        ended[hashlib.sha256(data).hexdigest()[:32]] = time.time()
    return ended


# --------------------------------------------------------------------------- PACS


@contextlib.contextmanager
def fresh_orthanc(workdir: Path, listen_port: int) -> Iterator[OrthancProcess]:
    """A private, empty Orthanc that knows our commitment listener; removed afterwards."""
    orthanc = OrthancProcess(
        workdir=workdir, modalities={"dermgate": (GATEWAY_AE, "127.0.0.1", listen_port)}
    )
    orthanc.start()
    try:
        yield orthanc
    finally:
        orthanc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------- DCMTK pipeline


def time_dcmtk(work: Path, card: Sequence[Path], template: Path, timeout: float) -> float:
    """Copy, ``img2dcm`` each file, one ``dcmsend``: seconds, into a fresh Orthanc."""
    folder, out = work / "folder", work / "dicom"
    folder.mkdir(parents=True)
    out.mkdir()
    with fresh_orthanc(work / "orthanc", free_port()) as orthanc:
        started = time.perf_counter()
        drop(card, folder)
        for path in sorted(folder.iterdir()):
            subprocess.run(
                ["img2dcm", "-q", "-vlp", "-df", str(template), str(path), str(out / path.name)],
                check=True,
                timeout=timeout,
            )
        subprocess.run(
            [
                "dcmsend",
                "-aet",
                "DCMSEND",
                "-aec",
                orthanc.aet,
                "127.0.0.1",
                str(orthanc.dicom_port),
                *sorted(map(str, out.iterdir())),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=timeout,
        )
        seconds = time.perf_counter() - started
        check_stored(orthanc, len(card), "DCMTK pipeline")
    return seconds


# --------------------------------------------------------------------------- gateway


@dataclass
class GatewayResult:
    """One gateway measurement: total seconds and each capture's milestones."""

    seconds: float
    started: float  # time.time() at the clock's start
    dropped: dict[str, float]
    taken: dict[str, float] = field(default_factory=dict)
    saved: dict[str, float] = field(default_factory=dict)
    sent: dict[str, float] = field(default_factory=dict)
    committed: dict[str, float] = field(default_factory=dict)
    commit_requests: int = 0
    cpu_seconds: float = 0.0


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def read_milestones(ledger: Path, result: GatewayResult) -> None:
    """When each capture was saved, SENT and COMMITTED, from the ledger."""
    conn = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT c.device_capture_id, c.received_at, d.sent_epoch, d.committed_at "
            "FROM captures c JOIN deliveries d ON d.capture_id = c.id"
        ).fetchall()
        result.commit_requests = int(conn.execute("SELECT COUNT(*) FROM commitments").fetchone()[0])
    finally:
        conn.close()
    for capture_id, received, sent, committed in rows:
        key = str(capture_id).removeprefix("photo-")
        result.saved[key] = _epoch(received)
        if sent is not None:
            result.sent[key] = float(sent)
        if committed is not None:
            result.committed[key] = _epoch(committed)


def read_taken(log: Path, result: GatewayResult) -> None:
    """When intake of each photo began: the driver's TRANSFERRING before its "saved"
    line (the gateway's log times are the box's local time, to the millisecond)."""
    began: float | None = None
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if ": TRANSFERRING" in line:
            began = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        elif began is not None and (found := _SAVED.search(line)):
            result.taken[found.group(1)] = began
            began = None


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_gateway(work: Path, card: Sequence[Path], timeout: float) -> GatewayResult:
    """``dermgate run`` watching a folder; seconds from the drop to all COMMITTED."""
    folder, state = work / "camera", work / "state"
    folder.mkdir(parents=True)
    ledger = state / "ledger.sqlite3"
    listen_port = free_port()
    with fresh_orthanc(work / "orthanc", listen_port) as orthanc:
        config = work / "dermgate.toml"
        config.write_text(
            gateway_config(
                state,
                listen_port=listen_port,
                destination={
                    "name": DESTINATION,
                    "kind": "dicom",
                    "ae_title": orthanc.aet,
                    "host": "127.0.0.1",
                    "port": orthanc.dicom_port,
                    "storage_commitment": True,
                },
                device={"driver": "photo-folder", "name": "camera", "folder": str(folder)},
            ),
            encoding="utf-8",
        )
        with open(work / "gateway.log", "wb") as log:
            proc = subprocess.Popen(
                [str(DERMGATE), "run", "--config", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            try:
                result = _drop_and_wait(proc, folder, card, ledger, timeout)
            finally:
                stop_process(proc)
        read_milestones(ledger, result)
        read_taken(work / "gateway.log", result)
        check_stored(orthanc, len(card), "gateway")
    return result


def _drop_and_wait(
    proc: subprocess.Popen[bytes], folder: Path, card: Sequence[Path], ledger: Path, timeout: float
) -> GatewayResult:
    deadline = time.monotonic() + 60
    while not (folder / ".processed").is_dir():  # the driver watches the folder
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start watching the folder; see gateway.log")
        time.sleep(0.02)
    time.sleep(0.5)  # let the start-up settle: the clock is for the photos only
    cpu_before = _cpu_seconds(proc.pid)
    started_wall = time.time()
    started = time.perf_counter()
    dropped: dict[str, float] = {}
    dropping = threading.Thread(target=lambda: dropped.update(drop(card, folder)))
    dropping.start()
    try:
        while count_in_states(ledger, ("COMMITTED",)) < len(card):
            if proc.poll() is not None or time.perf_counter() - started > timeout:
                raise RuntimeError("the gateway did not commit every photo; see gateway.log")
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        cpu = _cpu_seconds(proc.pid) - cpu_before
    finally:
        dropping.join()
    return GatewayResult(seconds, started_wall, dropped, cpu_seconds=cpu)


# --------------------------------------------------------------------------- report


def _ms(values: Sequence[float]) -> str:
    return f"median {median(values) * 1000:5.0f} ms, max {max(values) * 1000:5.0f} ms"


def print_breakdown(result: GatewayResult, options: PhotoFolderOptions) -> None:
    """Where the gateway's time went, per photo and along the run."""
    keys = sorted(result.dropped, key=result.dropped.__getitem__)
    missing = [k for k in keys if k not in result.committed or k not in result.sent]
    if missing:
        print(f"  (milestones missing for {len(missing)} photo(s))")
        return
    taken = {k: result.taken.get(k, result.saved[k]) for k in keys}
    wait = [taken[k] - result.dropped[k] for k in keys]
    intake = [result.saved[k] - taken[k] for k in keys]
    send = [result.sent[k] - result.saved[k] for k in keys]
    commit = [result.committed[k] - result.sent[k] for k in keys]
    print(
        f"  per photo, copied -> taken:     {_ms(wait)}  (settle after the close "
        f"{options.closed_settle_seconds:g} s, the photos before it, examine)"
    )
    print(
        f"  per photo, taken -> saved:      {_ms(intake)}  (intake: read, straight into "
        "its DICOM file, fsync, ledger; no wrap stage)"
    )
    print(f"  per photo, saved -> SENT:       {_ms(send)}  (waiting for an association, C-STORE)")
    print(f"  per photo, SENT -> COMMITTED:   {_ms(commit)}  (commitment batch + round trip)")
    t0 = result.started

    def at(values: dict[str, float]) -> str:
        return f"{max(values.values()) - t0:6.2f} s"

    print(
        f"  along the run: last copied {at(result.dropped)}, last saved {at(result.saved)}, "
        f"last SENT {at(result.sent)}, last COMMITTED {at(result.committed)}; "
        f"{result.commit_requests} commitment request(s); gateway CPU "
        f"{result.cpu_seconds:.2f} s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the ratio gateway / DCMTK pipeline."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=30, help="photos (default 30)")
    parser.add_argument("--width", type=int, default=4000, help="photo width (default 4000)")
    parser.add_argument("--height", type=int, default=3000, help="photo height (default 3000)")
    parser.add_argument("--distinct", type=int, default=4, help="pictures synthesised (default 4)")
    parser.add_argument("--rounds", type=int, default=1, help="measurements per side (default 1)")
    parser.add_argument("--timeout", type=float, default=600.0, help="per side, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if args.count < 1 or args.rounds < 1 or args.distinct < 1:
        parser.error("--count, --rounds and --distinct must be at least 1")
    require_tools(["img2dcm", "dcmsend"])
    if not ORTHANC_BINARY.exists() or not DERMGATE.exists():
        sys.exit(f"need {ORTHANC_BINARY} and {DERMGATE} (scripts/setup.sh)")
    options = PhotoFolderOptions(folder=Path("."))

    with bench_dir("dermgate-bench-hotfolder-", keep=args.keep) as work:
        card = make_card(work / "card", args.count, args.distinct, args.width, args.height)
        total_mb = sum(p.stat().st_size for p in card) / 1e6
        print_header(
            "hotfolder: camera photos dropped -> stored and committed at the PACS, "
            "gateway vs img2dcm + dcmsend",
            [
                f"photos: {args.count} x {total_mb / args.count:.2f} MB EXIF JPEG "
                f"({args.width}x{args.height} 4:2:0 q92, {args.distinct} pictures, each file "
                "distinct) = {:.0f} MB, copied into the folder one after the other".format(
                    total_mb
                ),
                f"gateway: photo-folder device with default options (closed_settle_seconds "
                f"{options.closed_settle_seconds:g}, settle_seconds {options.settle_seconds:g}, "
                f"poll_interval {options.poll_interval:g}); "
                "destination with storage commitment, other keys default; clock stops at "
                "all COMMITTED",
                "PACS: a fresh private Orthanc per measurement (fsync per stored file, its "
                "default); DCMTK side: img2dcm each file, then one dcmsend (no commitment)",
            ],
        )
        template = work / "template.dcm"
        write_template(TestImages((card[0],), args.width, args.height, 0.0), template)
        dcmtk: list[float] = []
        gateway: list[GatewayResult] = []
        for number in range(args.rounds):
            dcmtk.append(time_dcmtk(work / f"dcmtk-{number}", card, template, args.timeout))
            gateway.append(time_gateway(work / f"gateway-{number}", card, args.timeout))
            print(
                f"round {number + 1}: DCMTK pipeline {dcmtk[-1]:.2f} s | "
                f"gateway {gateway[-1].seconds:.2f} s"
            )
            print_breakdown(gateway[-1], options)
            sys.stdout.flush()
        anchor = median(dcmtk)
        ours = median(g.seconds for g in gateway)
        print()
        print(f"DCMTK pipeline (img2dcm + dcmsend): {anchor:6.2f} s  {total_mb / anchor:6.1f} MB/s")
        print(f"gateway, drop -> all COMMITTED:     {ours:6.2f} s  {total_mb / ours:6.1f} MB/s")
        print(f"ratio gateway/DCMTK pipeline:       {ratio(ours, anchor)}  (target <= {TARGET}x)")
        if ours > TARGET * anchor:
            print(
                f"GOAL MISSED: {ours / anchor:.2f}x is {ours / anchor - TARGET:.2f} above the "
                f"{TARGET}x target ({ours - TARGET * anchor:.2f} s too slow)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
