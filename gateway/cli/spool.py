"""The technician's ``dermgate spool`` commands.

::

    dermgate spool list   [--state STATE] [--json] --config FILE
    dermgate spool show   ID [--json] [--reveal] --config FILE
    dermgate spool retry  ID [--json] --config FILE
    dermgate spool export ID --to DIR [--json] --config FILE
    dermgate spool rebuild --config FILE

ID is the spool id shown by ``spool list`` or the capture's SOP Instance UID.
Nothing prints patient data except ``show --reveal``, which says so on stderr.
``show --reveal`` and ``export`` (a copy of patient data) first append a line to the
audit log, as the page's reveal does (who is the OS user); no line, no data.
They work beside a running service: reads use a read-only ledger connection, the
retry waits for the service's write lock (see :mod:`gateway.spool.admin`). ``rebuild``
replaces a lost ledger (:mod:`gateway.spool.rebuild`) and so takes the state folder's
lock: it refuses while the service runs.

Exit codes:

* 0 — success;
* 1 — failed at run time (I/O error; ledger busy or locked after a timeout);
* 2 — bad usage or bad configuration;
* 3 — no such capture (or no spool yet at the configured ``state_dir``);
* 4 — not possible in the capture's state (retry of a capture that is not
  QUARANTINED, export of a file that is gone…); the message says why.
* 141 — the reader of the output went away (``spool list | head``), quietly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pwd
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from gateway.core.config import ConfigError, DermGateConfig
from gateway.service.config import load_config
from gateway.service.state_lock import StateLock, StateLocked
from gateway.spool import admin, rebuild
from gateway.spool import ledger as db
from gateway.spool.details import (
    PATIENT_ATTRIBUTES,
    capture_details,
    local_time,
    patient_of,
)
from gateway.spool.dirs import SpoolDirs
from gateway.spool.spool_ids import high_water_path
from gateway.spool.states import CaptureState

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NO_SUCH_CAPTURE = 3
EXIT_NOT_POSSIBLE = 4

EXIT_CODES_EPILOG = """\
exit codes:
  0  success
  1  failed at run time (I/O error; ledger busy or locked after a timeout)
  2  bad usage or bad configuration
  3  no such capture (or no spool yet)
  4  not possible in the capture's state (the message says why)
  141  the reader of the output went away (`... | head`); nothing is printed
"""

PROGRESS_MIN_BYTES = 8_000_000
_PROGRESS_WIDTH = 30


class _Refusal(Exception):
    """A command stops with an exit code and a message for stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- plumbing


def _load(path: Path) -> DermGateConfig:
    try:
        return load_config(path)
    except ConfigError as err:
        # Each problem already names the file, as ``dermgate check-config`` prints it.
        for problem in err.problems:
            print(problem, file=sys.stderr)
        raise _Refusal(EXIT_USAGE, "") from err


def _existing_ledger(config: DermGateConfig) -> Path:
    path = config.ledger_path()
    if not path.exists():
        raise _Refusal(EXIT_NO_SUCH_CAPTURE, f"no spool yet at {config.spool_dir()}")
    return path


def _ledger_failure(path: Path, err: Exception) -> _Refusal:
    text = str(err)
    if "locked" in text or "busy" in text:
        return _Refusal(
            EXIT_FAILURE,
            f"the ledger {path} is busy (the service is writing to it); try again: {text}",
        )
    return _Refusal(EXIT_FAILURE, f"cannot use the ledger {path}: {text}")


def _run(name: str, body: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    def command(args: argparse.Namespace) -> int:
        try:
            return body(args)
        except _Refusal as err:
            for line in str(err).splitlines():
                print(f"dermgate spool {name}: {line}", file=sys.stderr)
            return err.code

    command.__doc__ = body.__doc__
    return command


def os_user() -> str:
    """Who runs this command: the OS user name (its uid if it has no name)."""
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


def _audit(config: DermGateConfig, action: str, spool_id: int) -> None:
    """Append the audit line for a look at patient data, before it is shown or copied.

    The same log and line as the page's reveal (:mod:`gateway.status.web.audit`),
    with the OS user as who. Run as root, what it creates belongs to the owner of
    ``state_dir`` (the service's user writes the same log). No line, no data:
    raises :class:`_Refusal` (exit 1) if the log cannot be written.
    """
    from gateway.core.state_owner import missing_folders, owned_like
    from gateway.status.web.audit import AuditLog

    log = AuditLog(config.audit_path())
    try:
        created = missing_folders(log.path)
        log.append(os_user(), action, spool_id)
        owned_like(config.gateway.state_dir, *created, log.path)
    except OSError as err:
        raise _Refusal(
            EXIT_FAILURE,
            f"cannot write the audit log {log.path} ({err.strerror or err}): "
            f"spool id {spool_id}: patient data neither shown nor copied",
        ) from err


# --------------------------------------------------------------------------- list


def _list(args: argparse.Namespace) -> int:
    """One line (or JSON object) per capture. No patient data by construction."""
    config = _load(args.config)
    path = config.ledger_path()
    if not path.exists():
        print(f"no spool yet at {config.spool_dir()}", file=sys.stderr)
        return EXIT_OK
    try:
        conn = db.open_ledger(path, readonly=True)
        try:
            rows = db.listing(conn)
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise _ledger_failure(path, err) from err
    if args.state is not None:
        rows = [row for row in rows if row.state == args.state]
    if args.json:
        for row in rows:
            print(json.dumps(dataclasses.asdict(row), sort_keys=True))
        return EXIT_OK
    print(
        f"{'ID':>6}  {'STATE':<12} {'ATT':>4}  {'SOP INSTANCE UID':<64}  {'DEVICE':<32}  "
        "CAPTURE  LAST ERROR / REASON"
    )
    for row in rows:
        note = row.reason or row.last_error or ""
        print(
            f"{row.id:>6}  {row.state:<12} {row.attempts:>4}  {row.sop_instance_uid:<64}  "
            f"{row.device:<32}  {row.device_capture_id:<7}  {note}"
        )
    return EXIT_OK


cmd_spool_list = _run("list", _list)


# --------------------------------------------------------------------------- show


def _read_capture(
    config: DermGateConfig, ref: int | str
) -> tuple[db.SpoolEntry, list[admin.DeliveryRecord]]:
    path = _existing_ledger(config)
    try:
        conn = db.open_ledger(path, readonly=True)
        try:
            entry = admin.find_entry(conn, ref)
            return entry, admin.deliveries(conn, entry.spool_id)
        finally:
            conn.close()
    except admin.NoSuchCapture as err:
        raise _Refusal(EXIT_NO_SUCH_CAPTURE, str(err)) from err
    except sqlite3.Error as err:
        raise _ledger_failure(path, err) from err


def _text(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _print_show(details: dict[str, Any], out: TextIO) -> None:
    def line(label: str, value: object, indent: str = "") -> None:
        print(f"{indent}{label:<22}{_text(value)}", file=out)

    device, settings = details["device"], details["settings"]
    line("Spool id", details["id"])
    line("State", details["state"])
    line("Reason", details["reason"])
    line("Study Instance UID", details["study_instance_uid"])
    line("Series Instance UID", details["series_instance_uid"])
    line("SOP Instance UID", details["sop_instance_uid"])
    sop_class = details["sop_class_uid"]
    if sop_class and details["sop_class_name"]:
        sop_class = f"{sop_class} ({details['sop_class_name']})"
    line("SOP Class UID", sop_class)
    line("Transfer Syntax UID", details["transfer_syntax_uid"])
    line("Driver", details["driver"])
    line("Device class", device["device_class"])
    line("Manufacturer", device["manufacturer"])
    line("Model", device["model"])
    line("Serial number", device["serial_number"])
    line("Firmware", ", ".join(device["software_versions"]))
    line("Device capture id", details["device_capture_id"])
    line("Content type", details["content_type"])
    line("Acquired (device)", details["acquired_at"])
    line("Polarization", settings["polarization"])
    line("Contact method", settings["contact"])
    line("Immersion media", settings["immersion"])
    line("Magnification", settings["magnification"])
    kelvin = settings["color_temperature_k"]
    line("Colour temperature", None if kelvin is None else f"{kelvin} K")
    line("Anatomic site (code)", settings["anatomic_site"])
    line("Laterality", settings["laterality"])
    line("Lesion id", settings["lesion_id"])
    line("Received", local_time(details["received_at"]))
    line("Updated", local_time(details["updated_at"]))
    for label, key in (("Raw file", "raw"), ("DICOM file", "dicom")):
        file = details["files"][key]
        if file["name"] is None:
            line(label, "(none)")
        elif file["exists"]:
            line(label, f"{file['name']} ({file['size']} bytes)")
        else:
            line(label, f"{file['name']} (MISSING)")
    if not details["deliveries"]:
        line("Deliveries", "(none)")
    for delivery in details["deliveries"]:
        print(f"Destination {delivery['destination']}", file=out)
        line("State", delivery["state"], "  ")
        line("Attempts", delivery["attempts"], "  ")
        line("Next attempt", delivery["next_attempt_at"], "  ")
        line("Last error", delivery["last_error"], "  ")
        line("Commit failures", delivery["commit_failures"], "  ")
        line("Awaiting commitment", "yes" if delivery["awaiting_commitment"] else "no", "  ")
        line("Sent", local_time(delivery["sent_at"]), "  ")
        line("Committed", local_time(delivery["committed_at"]), "  ")


def _show(args: argparse.Namespace) -> int:
    """Everything the ledger knows about one capture; patient data only with --reveal."""
    config = _load(args.config)
    dirs = SpoolDirs(config.spool_dir())
    entry, records = _read_capture(config, args.ref)
    details = capture_details(entry, records, dirs)
    patient: dict[str, str] | None = None
    source = ""
    if args.reveal:
        _audit(config, "cli-reveal", entry.spool_id)
        try:
            found = patient_of(entry, dirs)
        except Exception as err:  # pydicom raises several kinds for a damaged file
            raise _Refusal(
                EXIT_FAILURE,
                f"cannot read the DICOM file of spool id {entry.spool_id}: {type(err).__name__}",
            ) from err
        if found is None:
            print(
                f"spool id {entry.spool_id} has no DICOM file in the spool and its device sent no "
                "patient data: no patient data to show",
                file=sys.stderr,
            )
        else:
            patient, source = found
            print("warning: patient data shown (--reveal)", file=sys.stderr)
    if args.json:
        if patient is not None:
            details["patient"] = patient
        print(json.dumps(details, sort_keys=True))
        return EXIT_OK
    _print_show(details, sys.stdout)
    if patient is not None:
        print(f"Patient (from {source})")
        for keyword, label in PATIENT_ATTRIBUTES:
            print(f"  {label:<20}  {patient[keyword] or '(empty)'}")
    return EXIT_OK


cmd_spool_show = _run("show", _show)


# --------------------------------------------------------------------------- retry


def _retry(args: argparse.Namespace) -> int:
    """Release a QUARANTINED capture after the technician has acted."""
    config = _load(args.config)
    path = _existing_ledger(config)
    dirs = SpoolDirs(config.spool_dir())
    try:
        conn = db.open_ledger(path)
        try:
            outcome = admin.retry_capture(
                conn, dirs, args.ref, [d.name for d in config.destinations]
            )
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
    names = [d.name for d in config.destinations]
    if not (dirs.dicom.is_dir() or dirs.raw.is_dir()):
        print(f"no spool at {dirs.root}: nothing to rebuild")
        return EXIT_OK
    try:
        with StateLock.acquire(config.gateway.state_dir):
            report = rebuild.rebuild_ledger(
                ledger,
                dirs,
                names,
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
    _print_rebuild(report, dirs, names)
    return EXIT_OK


def _print_rebuild(report: rebuild.RebuildReport, dirs: SpoolDirs, names: list[str]) -> None:
    print(f"rebuilt the ledger {report.ledger} from the spool {dirs.root}:")
    sends = f"sent again to {', '.join(names)}" if names else "kept (no destination configured)"
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


# --------------------------------------------------------------------------- parser


def _capture_ref(text: str) -> int | str:
    try:
        return admin.parse_ref(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def add_spool_commands(sub: Any) -> None:
    """Add ``spool`` and its actions to the ``dermgate`` subparsers ``sub``."""
    formatter = argparse.RawDescriptionHelpFormatter
    spool = sub.add_parser(
        "spool",
        help="inspect and act on the spool",
        epilog=EXIT_CODES_EPILOG,
        formatter_class=formatter,
    )
    actions = spool.add_subparsers(dest="spool_command", required=True, metavar="ACTION")

    def action(name: str, help_text: str, func: Callable[..., int]) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EXIT_CODES_EPILOG,
            formatter_class=formatter,
        )
        parser.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")
        parser.set_defaults(func=func)
        return parser

    ref_help = "spool id (as shown by `spool list`) or SOP Instance UID"

    listing = action("list", "one line per capture", cmd_spool_list)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.add_argument(
        "--state", choices=[str(s) for s in CaptureState], help="only captures in this state"
    )

    show = action(
        "show", "everything the ledger knows about one capture (no patient data)", cmd_spool_show
    )
    show.add_argument("ref", metavar="ID", type=_capture_ref, help=ref_help)
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.add_argument(
        "--reveal",
        action="store_true",
        help="also read the DICOM file and show the patient data in it",
    )

    retry = action(
        "retry",
        "release a QUARANTINED capture once its cause is fixed (wrap or send it again)",
        cmd_spool_retry,
    )
    retry.add_argument("ref", metavar="ID", type=_capture_ref, help=ref_help)
    retry.add_argument("--json", action="store_true", help="one JSON object")

    export = action(
        "export",
        "copy a capture's DICOM file (or never-wrapped device file) into a folder",
        cmd_spool_export,
    )
    export.add_argument("ref", metavar="ID", type=_capture_ref, help=ref_help)
    export.add_argument(
        "--to", type=Path, required=True, metavar="DIR", help="folder (created if missing)"
    )
    export.add_argument(
        "--json", action="store_true", help="print path, size and sha256 as one JSON object"
    )

    action(
        "rebuild",
        "rebuild a missing or empty ledger from the spool's own files (service stopped)",
        cmd_spool_rebuild,
    )
