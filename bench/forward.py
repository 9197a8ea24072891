"""Forwarding: the gateway delivering N large captures to a PACS, against ``dcmsend``.

Anchor: DCMTK's ``dcmsend`` sends N Dermoscopic Photography files (about 7 MB each,
built by the project's own builder) to a private Orthanc on one association; then the
same files again with two ``dcmsend`` processes in parallel, one half each.

Gateway: a spool pre-populated through the project's own ledger API with the same
images as WRAPPED captures (fresh UIDs), then ``dermgate run`` with that destination
and no devices. The time runs from starting the process until the ledger (read
read-only) says every capture is SENT. Each side gets a fresh Orthanc, and every
instance is checked to be stored there.

Run: ``.venv/bin/python bench/forward.py [--count 50] [--size-mb 7]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from common import (
    DERMGATE,
    DEVICE,
    DRIVER,
    GatewayRun,
    TestImages,
    bench_dir,
    build_dicom,
    gateway_config,
    make_images,
    print_header,
    ratio,
    require_tools,
    run_gateway_until,
)

from gateway.core.capture import CaptureOffer
from gateway.demo.local_orthanc import ORTHANC_BINARY, OrthancProcess, free_port
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import insert_capture, mark_wrapped, open_ledger

DELIVERED = ("SENT", "COMMITTED")
DESTINATION = "pacs"


@contextlib.contextmanager
def fresh_orthanc(workdir: Path, sync_storage: bool) -> Iterator[OrthancProcess]:
    """A private, empty Orthanc; stopped and its storage removed afterwards."""
    orthanc = OrthancProcess(workdir=workdir, extra={"SyncStorageArea": sync_storage})
    orthanc.start()
    try:
        yield orthanc
    finally:
        orthanc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def check_stored(orthanc: OrthancProcess, wanted: int, side: str) -> None:
    """Fail loudly unless Orthanc holds exactly ``wanted`` instances."""
    stored = orthanc.count_instances()
    if stored != wanted:
        raise RuntimeError(f"{side}: Orthanc stores {stored} instances, expected {wanted}")


def time_dcmsend(
    orthanc: OrthancProcess, groups: Sequence[Sequence[Path]], timeout: float
) -> float:
    """Seconds for one ``dcmsend`` per group, all started together, to finish."""
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                "dcmsend",
                "-aet",
                "DCMSEND",
                "-aec",
                orthanc.aet,
                "127.0.0.1",
                str(orthanc.dicom_port),
                *map(str, group),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for group in groups
    ]
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=max(1.0, timeout - (time.perf_counter() - started)))
            if proc.returncode != 0:
                raise RuntimeError(f"dcmsend failed ({proc.returncode}): {err.decode()[-500:]}")
        return time.perf_counter() - started
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def populate_spool(state_dir: Path, images: TestImages, count: int) -> None:
    """Put ``count`` WRAPPED captures (fresh UIDs) into a new spool, as intake + wrap would."""
    dirs = SpoolDirs(state_dir / "spool")
    dirs.create()
    conn = open_ledger(state_dir / "ledger.sqlite3")
    try:
        for index in range(count):
            jpeg = images.for_capture(index)
            data = jpeg.read_bytes()
            built = build_dicom(jpeg, dirs.dicom, f"{index:06d}")
            raw_name = f"{built.uids.sop_instance}.raw"
            shutil.copyfile(jpeg, dirs.raw / raw_name)
            spool_id = insert_capture(
                conn,
                driver=DRIVER,
                device=DEVICE,
                offer=CaptureOffer(device_capture_id=f"{index:06d}"),
                uids=built.uids,
                raw_name=raw_name,
                raw_size=len(data),
                raw_sha256=hashlib.sha256(data).hexdigest(),
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
    finally:
        conn.close()


@dataclass
class GatewaySide:
    """One timed run of the gateway's forwarding stage."""

    total: float
    after_start: float
    run: GatewayRun


def time_gateway(
    work: Path,
    orthanc: OrthancProcess,
    images: TestImages,
    count: int,
    batch_size: int | None,
    associations: int | None,
    timeout: float,
) -> GatewaySide:
    """Seconds from ``dermgate run`` starting to every capture SENT in the ledger."""
    state_dir = work / "state"
    populate_spool(state_dir, images, count)
    destination: dict[str, str | int | float | bool] = {
        "name": DESTINATION,
        "kind": "dicom",
        "ae_title": orthanc.aet,
        "host": "127.0.0.1",
        "port": orthanc.dicom_port,
        "storage_commitment": False,
    }
    if batch_size is not None:
        destination["batch_size"] = batch_size
    if associations is not None:
        destination["associations"] = associations
    config = work / "dermgate.toml"
    config.write_text(
        gateway_config(state_dir, listen_port=free_port(), destination=destination),
        encoding="utf-8",
    )
    run = run_gateway_until(
        config,
        state_dir / "ledger.sqlite3",
        wanted=count,
        states=DELIVERED,
        timeout=timeout,
        log_path=work / "gateway.log",
    )
    if run.done_at is None:
        tail = "\n".join(line for _, line in run.log_lines[-15:])
        raise RuntimeError(f"gateway did not deliver {count} captures in {timeout:.0f} s:\n{tail}")
    check_stored(orthanc, count, "gateway")
    return GatewaySide(run.done_at, run.done_at - (run.running_at or 0.0), run)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the figures and the ratio gateway/dcmsend."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50, help="captures (default 50)")
    parser.add_argument("--size-mb", type=float, default=7.0, help="JPEG size in MB (default 7)")
    parser.add_argument(
        "--distinct", type=int, default=4, help="distinct images, cycled (default 4)"
    )
    parser.add_argument(
        "--batch-size", type=int, help="destination batch_size (default: the gateway's default)"
    )
    parser.add_argument(
        "--associations",
        type=int,
        help="destination associations (default: the gateway's default)",
    )
    parser.add_argument(
        "--no-pacs-fsync",
        action="store_true",
        help="Orthanc without fsync per stored file (SyncStorageArea false): shows the "
        "senders' own cost instead of the PACS's disk",
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat and take medians")
    parser.add_argument("--timeout", type=float, default=600.0, help="per side, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if args.count < 2:
        parser.error("--count must be at least 2")
    require_tools(["dcmsend"])
    if not ORTHANC_BINARY.exists() or not DERMGATE.exists():
        sys.exit(f"need {ORTHANC_BINARY} and {DERMGATE} (scripts/setup.sh)")

    with bench_dir("dermgate-bench-forward-", keep=args.keep) as work:
        images = make_images(work / "jpeg", min(args.count, args.distinct), args.size_mb)
        anchor_dir = work / "anchor"
        anchor_dir.mkdir()
        files = [
            build_dicom(images.for_capture(i), anchor_dir, f"{i:06d}").path
            for i in range(args.count)
        ]
        mean_mb = sum(f.stat().st_size for f in files) / len(files) / 1e6
        total_mb = mean_mb * args.count
        print_header(
            "forward: gateway C-STORE vs dcmsend, same files, same Orthanc build",
            [
                f"captures: {args.count} x {mean_mb:.2f} MB Part 10 ({images.width}x"
                f"{images.height} JPEG 4:2:0, {len(images.paths)} distinct, cycled) "
                f"= {total_mb:.0f} MB",
                f"gateway batch_size: {args.batch_size or 'default'}, "
                f"associations: {args.associations or 'default'}; "
                f"rounds: {args.rounds}; fresh Orthanc per measurement, "
                f"fsync per stored file: {'no' if args.no_pacs_fsync else 'yes (default)'}",
            ],
        )
        half = args.count // 2
        sync = not args.no_pacs_fsync
        one: list[float] = []
        two: list[float] = []
        gateway: list[GatewaySide] = []
        for number in range(args.rounds):
            with fresh_orthanc(work / f"orthanc-a{number}", sync) as orthanc:
                one.append(time_dcmsend(orthanc, [files], args.timeout))
                check_stored(orthanc, args.count, "dcmsend")
            with fresh_orthanc(work / f"orthanc-b{number}", sync) as orthanc:
                two.append(time_dcmsend(orthanc, [files[:half], files[half:]], args.timeout))
                check_stored(orthanc, args.count, "2 x dcmsend")
            with fresh_orthanc(work / f"orthanc-c{number}", sync) as orthanc:
                side_dir = work / f"gateway-{number}"
                gateway.append(
                    time_gateway(
                        side_dir,
                        orthanc,
                        images,
                        args.count,
                        args.batch_size,
                        args.associations,
                        args.timeout,
                    )
                )
                shutil.rmtree(side_dir / "state", ignore_errors=True)
            g = gateway[-1]
            print(
                f"round {number + 1}: dcmsend {one[-1]:.2f} s | 2 x dcmsend {two[-1]:.2f} s | "
                f"gateway {g.total:.2f} s (start-up {g.total - g.after_start:.2f} s, "
                f"then {g.after_start:.2f} s; SIGTERM to exit {g.run.stopped_in or 0:.2f} s)"
            )
            sys.stdout.flush()

        dcmsend_s = median(one)
        parallel_s = median(two)
        gateway_s = median(g.total for g in gateway)
        after_start_s = median(g.after_start for g in gateway)
        print()
        print(f"dcmsend, 1 association:      {dcmsend_s:6.2f} s  {total_mb / dcmsend_s:6.1f} MB/s")
        print(
            f"dcmsend, 2 in parallel:      {parallel_s:6.2f} s  {total_mb / parallel_s:6.1f} MB/s"
        )
        print(f"gateway, process start:      {gateway_s:6.2f} s  {total_mb / gateway_s:6.1f} MB/s")
        print(
            f"gateway, after start-up:     {after_start_s:6.2f} s  "
            f"{total_mb / after_start_s:6.1f} MB/s"
        )
        print(
            f"ratio gateway/dcmsend:                {ratio(gateway_s, dcmsend_s)}  (target <= 1.0x)"
        )
        print(f"ratio gateway/dcmsend after start-up: {ratio(after_start_s, dcmsend_s)}")
        print(f"ratio gateway/2 x dcmsend:            {ratio(gateway_s, parallel_s)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
