"""``dermgate spool retry``, ``forget-destination``, ``export`` and ``rebuild``: the
commands that act.

``retry`` and ``forget-destination`` write to the ledger beside a running service
(under its write lock, :mod:`gateway.spool.admin`); ``export`` copies a capture's
file out, after its audit line; ``rebuild`` writes a new ledger under the state
folder's lock.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sqlite3
import sys
import time
from typing import TextIO

from gateway.cli.spool_common import (
    EXIT_FAILURE,
    EXIT_NO_SUCH_CAPTURE,
    EXIT_NOT_POSSIBLE,
    EXIT_OK,
    _audit,
    _existing_ledger,
    _ledger_failure,
    _load,
    _read_capture,
    _Refusal,
    _run,
)
from gateway.core.routing import RoutePlan
from gateway.service.state_lock import StateLock, StateLocked
from gateway.spool import admin, rebuild
from gateway.spool import ledger as db
from gateway.spool.dirs import SpoolDirs
from gateway.spool.routing import DestinationConfigured, forget_destination, removed_destinations
from gateway.spool.spool_ids import high_water_path
from gateway.spool.states import CaptureState

PROGRESS_MIN_BYTES = 8_000_000
_PROGRESS_WIDTH = 30


# --------------------------------------------------------------------------- retry


def _retry(args: argparse.Namespace) -> int:
    """Release a QUARANTINED capture after the technician has acted."""
    config = _load(args.config)
    path = _existing_ledger(config)
    dirs = SpoolDirs(config.spool_dir())
    try:
        conn = db.open_ledger(path)
        try:
            outcome = admin.retry_capture(conn, dirs, args.ref, RoutePlan.from_config(config))
        finally:
            conn.close()
    except admin.NoSuchCapture as err:
        raise _Refusal(EXIT_NO_SUCH_CAPTURE, str(err)) from err
    except admin.NotPossible as err:
        raise _Refusal(EXIT_NOT_POSSIBLE, str(err)) from err
    except (sqlite3.Error, db.LedgerVersionError) as err:
        raise _ledger_failure(path, err) from err
    if args.json:
        print(json.dumps(dataclasses.asdict(outcome), sort_keys=True))
        return EXIT_OK
    what = f"spool id {outcome.spool_id} ({outcome.sop_instance_uid})"
    if outcome.state is CaptureState.CAPTURED:
        print(f"{what} is now CAPTURED: it will be wrapped again, with the same UIDs.")
    elif outcome.state is CaptureState.WRAPPED:
        sends = ", ".join(outcome.reset_deliveries) or "its pending destinations"
        print(f"{what} is now WRAPPED: it will be sent again to {sends}.")
    elif outcome.state is CaptureState.QUARANTINED:  # still no route sends it anywhere
        print(
            f"{what} is still QUARANTINED: no [[routes]] entry sends it anywhere; add one "
            "that matches it (see dermgate spool show), then retry it."
        )
    else:
        print(f"{what} is now {outcome.state}: every destination already has it.")
    if outcome.state in (CaptureState.CAPTURED, CaptureState.WRAPPED):
        print(
            "The running service picks it up within its polling interval "
            f"(it polls the ledger at least every {admin.SERVICE_POLL_SECONDS} s); "
            f"follow it with: dermgate spool show {outcome.spool_id} --config {args.config}"
        )
    return EXIT_OK


cmd_spool_retry = _run("retry", _retry)


# --------------------------------------------------------------------------- forget-destination


def _forget_destination(args: argparse.Namespace) -> int:
    """Let go of a destination taken out of the configuration: its captures stop waiting."""
    config = _load(args.config)
    path = _existing_ledger(config)
    plan = RoutePlan.from_config(config)
    if args.name in plan.destinations:
        raise _Refusal(
            EXIT_NOT_POSSIBLE,
            f"destination {args.name} is configured: remove it from [[destinations]] first",
        )
    try:
        conn = db.open_ledger(path)
        try:
            waiting = removed_destinations(conn, plan.destinations).get(args.name)
            if not waiting:
                raise _Refusal(
                    EXIT_NOT_POSSIBLE,
                    f"no capture waits for a destination named {args.name}: nothing to forget",
                )
            count = sum(waiting.values())
            if not args.yes:
                print(
                    f"{count} capture(s) wait for {args.name} (removed from the configuration). "
                    "Forgetting it drops those deliveries for good: the captures then count as "
                    "delivered once their other destinations confirm them, and may be purged. "
                    "Run again with --yes to do so."
                )
                return EXIT_OK
            done = forget_destination(conn, args.name, plan, time.time())
        finally:
            conn.close()
    except DestinationConfigured as err:
        raise _Refusal(EXIT_NOT_POSSIBLE, str(err)) from err
    except (sqlite3.Error, db.LedgerVersionError) as err:
        raise _ledger_failure(path, err) from err
    ids = ", ".join(str(i) for i in done.spool_ids)
    print(f"destination {args.name} forgotten: {count} delivery(ies) dropped (spool ids {ids}).")
    if done.rerouted.unrouted:
        print(
            f"{len(done.rerouted.unrouted)} of them are set aside: no route sends them "
            "anywhere else (see dermgate spool list)."
        )
    return EXIT_OK


cmd_spool_forget_destination = _run("forget-destination", _forget_destination)


# --------------------------------------------------------------------------- export


class ProgressBar:
    """``\\r[#####     ] 42% 12.3/29.0 MB`` on a terminal, for large copies only."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self._stream = stream
        self._total = total
        self._last = -1
        self.enabled = total > PROGRESS_MIN_BYTES and stream.isatty()

    def __call__(self, done: int, total: int) -> None:
        """Redraw after ``done`` of ``total`` bytes (only when the percentage moves)."""
        if not self.enabled:
            return
        percent = 100 * done // total if total else 100
        if percent == self._last:
            return
        self._last = percent
        filled = _PROGRESS_WIDTH * percent // 100
        bar = "#" * filled + " " * (_PROGRESS_WIDTH - filled)
        self._stream.write(f"\r[{bar}] {percent:3d}% {done / 1e6:.1f}/{total / 1e6:.1f} MB")
        self._stream.flush()

    def finish(self) -> None:
        """End the progress line (if one was drawn)."""
        if self.enabled and self._last >= 0:
            self._stream.write("\n")
            self._stream.flush()


def _export(args: argparse.Namespace) -> int:
    """Copy a capture's DICOM file (or never-wrapped raw file) into a folder."""
    config = _load(args.config)
    dirs = SpoolDirs(config.spool_dir())
    entry, _ = _read_capture(config, args.ref)
    try:
        source = admin.export_source(entry, dirs)
        _audit(config, "cli-export", entry.spool_id)
        bar = ProgressBar(sys.stderr, source.path.stat().st_size)
        try:
            result = admin.export_file(source, args.to, bar)
        finally:
            bar.finish()
    except admin.NotPossible as err:
        raise _Refusal(EXIT_NOT_POSSIBLE, str(err)) from err
    except FileNotFoundError as err:
        # Purged between the lookup and the copy.
        raise _Refusal(
            EXIT_NOT_POSSIBLE,
            f"spool id {entry.spool_id}: {err.filename} is no longer in the spool",
        ) from err
    except OSError as err:
        raise _Refusal(EXIT_FAILURE, f"cannot export spool id {entry.spool_id}: {err}") from err
    if args.json:
        print(
            json.dumps(
                {
                    "id": entry.spool_id,
                    "path": str(result.path),
                    "size": result.size,
                    "sha256": result.sha256,
                    "kind": result.kind,
                },
                sort_keys=True,
            )
        )
    else:
        print(result.path)
    return EXIT_OK


cmd_spool_export = _run("export", _export)


# --------------------------------------------------------------------------- rebuild


def _rebuild(args: argparse.Namespace) -> int:
    """Rebuild a missing or empty ledger from the spool's own files (service stopped)."""
    config = _load(args.config)
    dirs = SpoolDirs(config.spool_dir())
    ledger = config.ledger_path()
    plan = RoutePlan.from_config(config)
    if not (dirs.dicom.is_dir() or dirs.raw.is_dir()):
        print(f"no spool at {dirs.root}: nothing to rebuild")
        return EXIT_OK
    try:
        with StateLock.acquire(config.gateway.state_dir):
            report = rebuild.rebuild_ledger(
                ledger,
                dirs,
                plan,
                gateway_id=config.gateway.id,
                spool_id_mark=high_water_path(config.gateway.state_dir),
            )
    except StateLocked as err:
        raise _Refusal(EXIT_FAILURE, f"{err}; nothing rebuilt") from err
    except rebuild.RebuildRefused as err:
        raise _Refusal(EXIT_FAILURE, str(err)) from err
    except (OSError, sqlite3.Error) as err:
        raise _Refusal(
            EXIT_FAILURE, f"cannot write a new ledger at {ledger}: {err}; nothing changed"
        ) from err
    _print_rebuild(report, dirs, plan)
    return EXIT_OK


def _print_rebuild(report: rebuild.RebuildReport, dirs: SpoolDirs, plan: RoutePlan) -> None:
    print(f"rebuilt the ledger {report.ledger} from the spool {dirs.root}:")
    names = ", ".join(plan.destinations)
    sends = (
        "kept (no destination configured)"
        if not plan.destinations
        else f"sent again to {names}"
        if not plan.routes
        else f"sent again to {names} as [[routes]] say (by SOP class and sensitive flag; "
        "a rebuilt capture's driver and device are not known)"
    )
    print(
        f"  {len(report.rebuilt)} capture(s) recorded as WRAPPED from {dirs.dicom}: each will "
        f"be {sends} under its own SOP Instance UID once the service starts (a PACS that "
        "already has one keeps a single copy)"
    )
    for item in report.rebuilt:
        print(f"    spool id {item.spool_id:>6}  {item.sop_instance_uid}")
    print(
        f"  spool ids: {report.kept_ids} capture(s) kept the spool id of their temporary "
        f"Patient ID (TMP-<gateway id>-N), the others got new ones; new captures get spool "
        f"ids from {report.next_spool_id} on (an id is never handed out twice)"
    )
    if report.mark_missing:
        print(
            f"  warning: there was no spool id mark ({report.spool_id_mark}), so ids continue "
            "above the highest one found in the spool: a capture purged earlier under a "
            "higher spool id could share its temporary Patient ID with a new one. If the "
            "PACS holds a TMP-<gateway id>-N above that, write a larger number into "
            f"{report.spool_id_mark} before starting the service"
        )
    if report.raw_only:
        print(
            f"  {len(report.raw_only)} raw capture file(s) in {dirs.raw} that no DICOM file "
            "stands for, recorded as QUARANTINED and kept in place. What device sent them, "
            "their patient and what they show was in the lost ledger, so DermGate cannot "
            "wrap them: export each (dermgate spool export ID --to DIR) and take it again "
            "or send it by hand if the PACS does not have it:"
        )
        for spool_id, name in report.raw_only:
            print(f"    spool id {spool_id}: {name}")
    if report.skipped:
        print(f"  {len(report.skipped)} file(s) in {dirs.dicom} not recorded, kept in place:")
        for name, why in report.skipped:
            print(f"    {name}: {why}")
    if report.wal_kept is not None:
        print(f"  the lost ledger's write-ahead log was kept as {report.wal_kept}")
    print("Start the service again (dermgate run, or systemctl start dermgate).")


cmd_spool_rebuild = _run("rebuild", _rebuild)
