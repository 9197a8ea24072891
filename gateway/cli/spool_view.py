"""``dermgate spool list`` and ``dermgate spool show``: reading the ledger, printing it.

Nothing here writes to the ledger; only ``show --reveal`` prints patient data,
after its audit line (:func:`gateway.cli.spool_common._audit`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sqlite3
import sys
from typing import Any, TextIO

from gateway.cli.spool_common import (
    EXIT_FAILURE,
    EXIT_OK,
    _audit,
    _ledger_failure,
    _load,
    _read_capture,
    _Refusal,
    _run,
)
from gateway.spool import ledger as db
from gateway.spool.details import (
    PATIENT_ATTRIBUTES,
    capture_details,
    local_time,
    patient_of,
)
from gateway.spool.dirs import SpoolDirs

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
        sent_as = delivery["sent_as"]
        verb = "Sent as" if delivery["state"] in ("SENT", "COMMITTED") else "To send as"
        if sent_as["derived"] or verb == "Sent as":
            line(verb, sent_as["text"], "  ")
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
