"""Forwarding: the gateway delivering N large captures to a PACS, against ``dcmsend``.

Anchor: DCMTK's ``dcmsend`` sends N Dermoscopic Photography files (about 7 MB each,
built by the project's own builder) to a private Orthanc on one association; then the
same files again with two ``dcmsend`` processes in parallel, one half each.

Gateway: a spool pre-populated through the project's own ledger API with the same
images as WRAPPED captures (fresh UIDs), then ``dermgate run`` with that destination
and no devices. The time runs from starting the process until the ledger (read
read-only) says every capture is SENT. Each side gets a fresh Orthanc, and every
instance is checked to be stored there.

``--cpu-budget 0.5`` measures everything twice: as it is, then with the gateway and
each DCMTK anchor confined to that fraction of one core (``bench/cpu_budget.py``,
cgroup v1; the two parallel ``dcmsend`` processes share one budget as the gateway's two
associations do). Orthanc is never confined: it stands for a PACS on its own server.

Run: ``.venv/bin/python bench/forward.py [--count 50] [--size-mb 7] [--cpu-budget 0.5]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
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
    check_stored,
    gateway_config,
    make_images,
    print_header,
    ratio,
    require_tools,
    run_gateway_until,
)
from cpu_budget import CpuBudgetUnavailable, cpu_budget

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


def children_cpu() -> float:
    """CPU seconds (user + system) of every child this process has waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_dcmsend(
    orthanc: OrthancProcess,
    groups: Sequence[Sequence[Path]],
    timeout: float,
    preexec: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """Seconds for one ``dcmsend`` per group, all started together, to finish, and
    the CPU seconds they used."""
    cpu_before = children_cpu()
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
            preexec_fn=preexec,
        )
        for group in groups
    ]
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=max(1.0, timeout - (time.perf_counter() - started)))
            if proc.returncode != 0:
                raise RuntimeError(f"dcmsend failed ({proc.returncode}): {err.decode()[-500:]}")
        return time.perf_counter() - started, children_cpu() - cpu_before
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
    cpu: float
    """CPU seconds of the whole ``dermgate run`` process (start-up to exit)."""


def time_gateway(
    work: Path,
    orthanc: OrthancProcess,
    images: TestImages,
    count: int,
    batch_size: int | None,
    associations: int | None,
    timeout: float,
    preexec: Callable[[], None] | None = None,
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
    cpu_before = children_cpu()
    run = run_gateway_until(
        config,
        state_dir / "ledger.sqlite3",
        wanted=count,
        states=DELIVERED,
        timeout=timeout,
        log_path=work / "gateway.log",
        preexec=preexec,
    )
    cpu = children_cpu() - cpu_before
    if run.done_at is None:
        tail = "\n".join(line for _, line in run.log_lines[-15:])
        raise RuntimeError(f"gateway did not deliver {count} captures in {timeout:.0f} s:\n{tail}")
    check_stored(orthanc, count, "gateway")
    return GatewaySide(run.done_at, run.done_at - (run.running_at or 0.0), run, cpu)


@dataclass
class Round:
    """One round of the three measurements, under one CPU budget (or none)."""

    one: float
    two: float
    gateway: GatewaySide
    cpu_one: float
    cpu_two: float
    budgets: list[str]


@dataclass
class Setup:
    """What every round sends, and how."""

    work: Path
    files: list[Path]
    images: TestImages
    count: int
    sync: bool
    batch_size: int | None
    associations: int | None
    timeout: float


def measure(setup: Setup, number: int, fraction: float | None, tag: str) -> Round:
    """One ``dcmsend``, two in parallel, then the gateway; each in its own budget."""
    half = setup.count // 2
    work = setup.work
    with fresh_orthanc(work / f"orthanc-a{tag}{number}", setup.sync) as orthanc:
        with cpu_budget(fraction, "dcmsend") as budget_one:
            one, cpu_one = time_dcmsend(orthanc, [setup.files], setup.timeout, budget_one.preexec)
        check_stored(orthanc, setup.count, "dcmsend")
    with fresh_orthanc(work / f"orthanc-b{tag}{number}", setup.sync) as orthanc:
        with cpu_budget(fraction, "dcmsend2") as budget_two:
            two, cpu_two = time_dcmsend(
                orthanc,
                [setup.files[:half], setup.files[half:]],
                setup.timeout,
                budget_two.preexec,
            )
        check_stored(orthanc, setup.count, "2 x dcmsend")
    with fresh_orthanc(work / f"orthanc-c{tag}{number}", setup.sync) as orthanc:
        side_dir = work / f"gateway-{tag}{number}"
        with cpu_budget(fraction, "gateway") as budget_gateway:
            gateway = time_gateway(
                side_dir,
                orthanc,
                setup.images,
                setup.count,
                setup.batch_size,
                setup.associations,
                setup.timeout,
                budget_gateway.preexec,
            )
        shutil.rmtree(side_dir / "state", ignore_errors=True)
    budgets = [
        f"dcmsend {budget_one.describe()}",
        f"2 x dcmsend {budget_two.describe()}",
        f"gateway {budget_gateway.describe()}",
    ]
    return Round(one, two, gateway, cpu_one, cpu_two, budgets if fraction else [])


def verdict(value: float, target: float) -> str:
    """The target, and by how much it is missed, if it is."""
    if value <= target:
        return f"(target <= {target:g}x: met)"
    return f"(target <= {target:g}x: MISSED by {(value / target - 1) * 100:.0f} %)"


def report(rounds: list[Round], total_mb: float, title: str, budgeted: bool) -> None:
    """Medians of ``rounds`` and the ratios against the goals."""
    dcmsend_s = median(r.one for r in rounds)
    parallel_s = median(r.two for r in rounds)
    gateway_s = median(r.gateway.total for r in rounds)
    after_start_s = median(r.gateway.after_start for r in rounds)
    print()
    print(f"-- {title}")
    print(f"dcmsend, 1 association:      {dcmsend_s:6.2f} s  {total_mb / dcmsend_s:6.1f} MB/s")
    print(f"dcmsend, 2 in parallel:      {parallel_s:6.2f} s  {total_mb / parallel_s:6.1f} MB/s")
    print(f"gateway, process start:      {gateway_s:6.2f} s  {total_mb / gateway_s:6.1f} MB/s")
    print(
        f"gateway, after start-up:     {after_start_s:6.2f} s  {total_mb / after_start_s:6.1f} MB/s"
    )
    print(
        f"CPU time:                    dcmsend {median(r.cpu_one for r in rounds):.2f} s, "
        f"2 x dcmsend {median(r.cpu_two for r in rounds):.2f} s, "
        f"gateway {median(r.gateway.cpu for r in rounds):.2f} s (whole process)"
    )
    startup_cpu = median(r.gateway.run.cpu_at_running or 0.0 for r in rounds)
    print(
        f"gateway CPU to 'running as':  {startup_cpu:.2f} s of its "
        f"{median(r.gateway.cpu for r in rounds):.2f} s (imports, ledger, reconciliation)"
    )
    one = gateway_s / dcmsend_s
    two = gateway_s / parallel_s
    if budgeted:
        print(f"ratio gateway/dcmsend:                    {ratio(gateway_s, dcmsend_s)}  ", end="")
        print(verdict(one, 1.5))
        print(f"ratio gateway/2 x dcmsend:                {ratio(gateway_s, parallel_s)}")
    else:
        print(f"ratio gateway/dcmsend:                    {ratio(gateway_s, dcmsend_s)}  ", end="")
        print(verdict(one, 0.75))
        print(f"ratio gateway/2 x dcmsend:                {ratio(gateway_s, parallel_s)}  ", end="")
        print(verdict(two, 1.1))
    print(f"ratio gateway/dcmsend after start-up:     {ratio(after_start_s, dcmsend_s)}")
    print(f"ratio gateway/2 x dcmsend after start-up: {ratio(after_start_s, parallel_s)}")
    if one > (1.5 if budgeted else 0.75) or (not budgeted and two > 1.1):
        print(
            f"why: start-up took {gateway_s - after_start_s:.2f} s of the gateway's "
            f"{gateway_s:.2f} s ({startup_cpu:.2f} s of CPU before it sent anything); the "
            "sending itself is the after-start-up figure"
        )
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the figures and the ratios gateway/dcmsend."""
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
    parser.add_argument(
        "--cpu-budget",
        type=float,
        metavar="FRACTION",
        help="also measure with the gateway and each DCMTK anchor confined to this "
        "fraction of one core (cgroup v1, needs root); Orthanc is not confined",
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
    if args.cpu_budget is not None:
        try:
            with cpu_budget(args.cpu_budget, "check"):
                pass
        except CpuBudgetUnavailable as err:
            sys.exit(str(err))

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
        budget_line = (
            f"CPU budget: {args.cpu_budget:g} of one core for the gateway, for dcmsend, and "
            "for the two parallel dcmsends together, each measured also without; "
            "Orthanc never confined"
            if args.cpu_budget is not None
            else "CPU budget: none (--cpu-budget FRACTION adds a confined measurement)"
        )
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
                budget_line,
            ],
        )
        setup = Setup(
            work,
            files,
            images,
            args.count,
            not args.no_pacs_fsync,
            args.batch_size,
            args.associations,
            args.timeout,
        )
        fractions: list[float | None] = [None]
        if args.cpu_budget is not None:
            fractions.append(args.cpu_budget)
        results: dict[float | None, list[Round]] = {f: [] for f in fractions}
        for number in range(args.rounds):
            for fraction in fractions:
                tag = "free" if fraction is None else f"cpu{fraction:g}-"
                r = measure(setup, number, fraction, tag)
                results[fraction].append(r)
                g = r.gateway
                where = "" if fraction is None else f", {fraction:g} core"
                print(
                    f"round {number + 1}{where}: dcmsend {r.one:.2f} s | 2 x dcmsend "
                    f"{r.two:.2f} s | gateway {g.total:.2f} s (start-up "
                    f"{g.total - g.after_start:.2f} s, then {g.after_start:.2f} s; SIGTERM to "
                    f"exit {g.run.stopped_in or 0:.2f} s)"
                )
                for line in r.budgets:
                    print(f"  {line}")
                sys.stdout.flush()
        for fraction in fractions:
            title = (
                "no CPU budget"
                if fraction is None
                else f"CPU budget {fraction:g} of one core (gateway, dcmsend; not Orthanc)"
            )
            report(results[fraction], total_mb, title, fraction is not None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
