"""The technician's spool commands, run as the ``dermgate`` command against a real spool.

The spool is built without a running service: the ledger functions the service uses
write the rows, and real files (device JPEGs, Part 10 files) lie in the spool folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from gateway.core.capture import (
    ContentType,
)
from gateway.core.errors import DeliveryError, DeliveryErrorCode
from gateway.core.uids import new_uid
from gateway.spool import commitments
from gateway.spool import ledger as db
from tests.support.spool import PATIENT, SECRETS, Spool, dermgate, write_config

REFUSED_A900 = DeliveryError(
    DeliveryErrorCode.STORE_FAILED, "0xA900 dataset does not match SOP class", 0xA900
)

# --------------------------------------------------------------------------- show


def test_show_prints_the_ledger_but_no_patient_data(spool: Spool) -> None:
    spool_id, uid = spool.add(patient=PATIENT)
    db.record_refused(spool.conn, spool_id, "pacs", REFUSED_A900)

    text = dermgate("show", spool_id, config=spool.config)
    assert text.returncode == 0, text.stderr
    for expected in (
        uid,
        "QUARANTINED",
        "pacs refused it: 0xA900",
        "Dermoscopic Photography Image Storage",
        "DS100-TEST",
        "DS-100 Dermatoscope",
        "2.4.1",
        "POLARIZED",
        "39937001",
        "LES-7",
        "image/jpeg",
        f"{uid}.raw",
        f"{uid}.dcm",
        "Destination pacs",
        "FAILED",
    ):
        assert expected in text.stdout
    by_json = dermgate("show", uid, "--json", config=spool.config)
    assert by_json.returncode == 0, by_json.stderr
    details = json.loads(by_json.stdout)
    assert details["id"] == spool_id
    assert details["state"] == "QUARANTINED"
    assert details["device"]["serial_number"] == "DS100-TEST"
    assert details["settings"]["laterality"] == "L"
    assert details["files"]["dicom"]["exists"] is True
    assert details["files"]["raw"]["size"] == details["files"]["raw"]["recorded_size"]
    [delivery] = details["deliveries"]
    assert delivery["destination"] == "pacs"
    assert delivery["state"] == "FAILED"
    assert delivery["attempts"] == 1
    assert "patient" not in details
    for result in (text, by_json):
        for secret in SECRETS:
            assert secret not in result.stdout + result.stderr


def test_show_reveal_reads_the_patient_from_the_dicom_file(spool: Spool) -> None:
    spool_id, _ = spool.add(patient=PATIENT)

    text = dermgate("show", spool_id, "--reveal", config=spool.config)
    assert text.returncode == 0, text.stderr
    assert "Doe^Jane" in text.stdout
    assert "PID-4711" in text.stdout
    assert "ACC-0815" in text.stdout
    assert "(empty)" in text.stdout  # Issuer of Patient ID
    assert "patient data" in text.stderr
    assert len(text.stderr.splitlines()) == 1
    by_json = dermgate("show", spool_id, "--reveal", "--json", config=spool.config)
    assert json.loads(by_json.stdout)["patient"] == {
        "PatientName": "Doe^Jane",
        "PatientID": "PID-4711",
        "IssuerOfPatientID": "",
        "PatientBirthDate": "19700101",
        "PatientSex": "F",
        "AccessionNumber": "ACC-0815",
    }


def test_show_reveal_of_a_never_wrapped_capture_reads_what_the_device_sent(
    spool: Spool,
) -> None:
    """A scanner export quarantined before it became DICOM: whose is it?"""
    spool_id, _ = spool.add(wrap=False, supplied=PATIENT)
    db.quarantine(spool.conn, spool_id, "the DICOM writer failed unexpectedly (ValueError)")
    plain = dermgate("show", spool_id, config=spool.config)
    assert plain.returncode == 0, plain.stderr
    for secret in SECRETS:
        assert secret not in plain.stdout + plain.stderr
    text = dermgate("show", spool_id, "--reveal", config=spool.config)
    assert text.returncode == 0, text.stderr
    assert "Patient (from the device's metadata)" in text.stdout
    assert "Doe^Jane" in text.stdout
    assert "PID-4711" in text.stdout
    assert "patient data shown" in text.stderr
    nothing_id, _ = spool.add(wrap=False)
    none = dermgate("show", nothing_id, "--reveal", config=spool.config)
    assert none.returncode == 0
    assert "no patient data to show" in none.stderr
    assert "Patient (" not in none.stdout


def test_show_of_pending_delivery_has_next_attempt(spool: Spool) -> None:
    spool_id, _ = spool.add()
    details = json.loads(dermgate("show", spool_id, "--json", config=spool.config).stdout)
    assert details["state"] == "WRAPPED"
    assert details["deliveries"][0]["state"] == "PENDING"
    assert details["deliveries"][0]["next_attempt_at"] is not None


def test_show_does_not_print_the_commitment_transaction_uid(spool: Spool) -> None:
    """Knowing it is half of forging a report: the page and the CLI never show it."""
    spool_id, _ = spool.add()
    db.record_sent(spool.conn, spool_id, "pacs")
    txn = new_uid()
    commitments.open_transaction(spool.conn, "pacs", txn, [spool_id], time.time())
    text = dermgate("show", spool_id, config=spool.config)
    by_json = dermgate("show", spool_id, "--json", config=spool.config)
    assert text.returncode == 0, text.stderr
    assert by_json.returncode == 0, by_json.stderr
    assert txn not in text.stdout + by_json.stdout
    assert re.search(r"^  Awaiting commitment +yes$", text.stdout, re.MULTILINE)
    assert json.loads(by_json.stdout)["deliveries"][0]["awaiting_commitment"] is True


def test_unknown_capture_exits_3(spool: Spool) -> None:
    spool.add()
    for action in (["show"], ["retry"], ["export", "--to", str(spool.dirs.root / "out")]):
        for ref in ("999", "1.2.3.4.5"):
            result = dermgate(*action, ref, config=spool.config)
            assert result.returncode == 3, (action, ref, result.stderr)
            assert "no capture with" in result.stderr


def test_missing_ledger_exits_3(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "nowhere")
    for action in (["show", "1"], ["retry", "1"], ["export", "1", "--to", str(tmp_path)]):
        result = dermgate(*action, config=config)
        assert result.returncode == 3
        assert "no spool yet at" in result.stderr
    assert not (tmp_path / "nowhere").exists(), "a command must not create a spool"
    listing = dermgate("list", config=config)
    assert listing.returncode == 0
    assert "no spool yet at" in listing.stderr


def test_bad_usage_and_bad_configuration_exit_2(spool: Spool, tmp_path: Path) -> None:
    assert dermgate("show", "not-an-id", config=spool.config).returncode == 2
    assert dermgate("show", "1").returncode == 2  # --config is required
    assert dermgate("export", "1", config=spool.config).returncode == 2  # --to is required
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway]\nstate_dri = '/tmp'\n", encoding="utf-8")
    result = dermgate("show", "1", config=bad)
    assert result.returncode == 2
    assert "state_dri" in result.stderr


def test_help_documents_exit_codes() -> None:
    result = dermgate("retry", "--help")
    assert result.returncode == 0
    assert "exit codes:" in result.stdout
    assert "4  not possible" in result.stdout


# --------------------------------------------------------------------------- list


def test_list_filters_by_state(spool: Spool) -> None:
    first, _ = spool.add()
    second, _ = spool.add()
    spool.conn.execute("UPDATE captures SET state = 'SENT' WHERE id = ?", (second,))
    result = dermgate("list", "--json", "--state", "WRAPPED", config=spool.config)
    assert result.returncode == 0
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [first]
    everything = dermgate("list", config=spool.config)
    assert len(everything.stdout.splitlines()) == 3  # header and two captures


# --------------------------------------------------------------------------- retry


def test_retry_after_refusal_sends_again(spool: Spool) -> None:
    spool_id, _ = spool.add()
    db.record_refused(spool.conn, spool_id, "pacs", REFUSED_A900)
    before = time.time()

    result = dermgate("retry", spool_id, config=spool.config)
    assert result.returncode == 0, result.stderr
    assert "WRAPPED" in result.stdout
    assert "60 s" in result.stdout
    capture = spool.capture(spool_id)
    assert capture["state"] == "WRAPPED"
    assert capture["reason"] is None
    delivery = spool.delivery(spool_id)
    assert delivery["state"] == "PENDING"
    assert delivery["last_error"] == "retry requested by technician"
    assert before - 1 <= delivery["next_attempt_at"] <= time.time() + 1
    due = db.due_deliveries(spool.conn, "pacs", time.time(), 10)
    assert [d.spool_id for d in due] == [spool_id]

    again = dermgate("retry", spool_id, config=spool.config)
    assert again.returncode == 4
    assert "WRAPPED, not QUARANTINED" in again.stderr


def test_retry_after_failed_commitment_clears_the_commitment(spool: Spool) -> None:
    spool_id, uid = spool.add()
    db.record_sent(spool.conn, spool_id, "pacs")
    txn = new_uid()
    commitments.open_transaction(spool.conn, "pacs", txn, [spool_id], time.time())
    outcome = commitments.apply_report(spool.conn, txn, [], [(uid, 0x0110)], max_failures=1)
    assert outcome.quarantined == 1
    assert spool.delivery(spool_id)["commit_failures"] == 1

    result = dermgate("retry", uid, "--json", config=spool.config)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["state"] == "WRAPPED"
    assert report["reset_deliveries"] == ["pacs"]
    delivery = spool.delivery(spool_id)
    assert (delivery["state"], delivery["commit_failures"], delivery["commit_txn"]) == (
        "PENDING",
        0,
        None,
    )


def test_retry_of_a_wrap_failure_wraps_again(spool: Spool) -> None:
    spool_id, _ = spool.add(content=b"not a JPEG at all", wrap=False)
    db.quarantine(spool.conn, spool_id, "the device file is not a JPEG")

    result = dermgate("retry", spool_id, config=spool.config)
    assert result.returncode == 0, result.stderr
    assert "CAPTURED" in result.stdout
    capture = spool.capture(spool_id)
    assert (capture["state"], capture["reason"]) == ("CAPTURED", None)


def test_retry_with_nothing_left_to_send_exits_4(spool: Spool) -> None:
    spool_id, uid = spool.add()
    db.record_refused(
        spool.conn,
        spool_id,
        "pacs",
        DeliveryError(DeliveryErrorCode.STORE_FAILED, "C-STORE status 0xC000", 0xC000),
    )
    (spool.dirs.raw / f"{uid}.raw").unlink()
    (spool.dirs.dicom / f"{uid}.dcm").unlink()

    result = dermgate("retry", spool_id, config=spool.config)
    assert result.returncode == 4
    assert "nothing left to send" in result.stderr
    assert spool.capture(spool_id)["state"] == "QUARANTINED", "nothing changed"


def test_retry_waits_for_a_busy_ledger_then_exits_1(spool: Spool) -> None:
    spool_id, _ = spool.add()
    db.quarantine(spool.conn, spool_id, "held for the test")
    spool.conn.execute("BEGIN IMMEDIATE")  # as the service would while writing
    try:
        result = dermgate("retry", spool_id, config=spool.config)
    finally:
        spool.conn.execute("ROLLBACK")
    assert result.returncode == 1
    assert "busy" in result.stderr
    assert spool.capture(spool_id)["state"] == "QUARANTINED"


# --------------------------------------------------------------------------- export


def test_export_copies_the_dicom_file(spool: Spool, tmp_path: Path) -> None:
    spool_id, uid = spool.add(patient=PATIENT)
    source = spool.dirs.dicom / f"{uid}.dcm"
    target = tmp_path / "usb" / "exports"

    result = dermgate("export", spool_id, "--to", target, config=spool.config)
    assert result.returncode == 0, result.stderr
    copy = target / f"{uid}.dcm"
    assert result.stdout.strip() == str(copy)
    assert copy.read_bytes() == source.read_bytes()
    assert not [p for p in target.iterdir() if p != copy], "no temporary file left"
    assert result.stderr == "", "no progress bar without a terminal"

    by_json = dermgate("export", uid, "--to", target, "--json", config=spool.config)
    assert by_json.returncode == 0, by_json.stderr
    report = json.loads(by_json.stdout)
    assert report["path"] == str(copy)
    assert report["size"] == source.stat().st_size
    assert report["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    for run in (result, by_json):
        for secret in SECRETS:
            assert secret not in run.stdout + run.stderr


def test_export_of_a_never_wrapped_capture_copies_the_device_file(
    spool: Spool, tmp_path: Path
) -> None:
    """The copy is named by what the device said it sent, so it opens in the right program."""
    jpeg_id, jpeg_uid = spool.add(wrap=False)
    mesh_id, mesh_uid = spool.add(content=b"solid body\n", wrap=False, content_type=ContentType.STL)
    pixels = b"\x00\x01" * 64
    frames_id, frames_uid = spool.add(content=pixels, wrap=False, content_type=ContentType.PIXELS)
    for spool_id, name in (
        (jpeg_id, f"{jpeg_uid}.jpg"),
        (mesh_id, f"{mesh_uid}.stl"),
        (frames_id, f"{frames_uid}.raw"),
    ):
        result = dermgate("export", spool_id, "--to", tmp_path / "out", config=spool.config)
        assert result.returncode == 0, result.stderr
        assert Path(result.stdout.strip()).name == name
    assert (tmp_path / "out" / f"{mesh_uid}.stl").read_bytes() == b"solid body\n"
    assert (tmp_path / "out" / f"{frames_uid}.raw").read_bytes() == pixels


def test_export_of_a_purged_capture_exits_4(spool: Spool, tmp_path: Path) -> None:
    spool_id, uid = spool.add()
    db.record_sent(spool.conn, spool_id, "pacs")
    (spool.dirs.dicom / f"{uid}.dcm").unlink()
    spool.conn.execute(
        "UPDATE captures SET state = 'PURGED', reason = 'kept 30 days after commitment' "
        "WHERE id = ?",
        (spool_id,),
    )
    result = dermgate("export", spool_id, "--to", tmp_path / "out", config=spool.config)
    assert result.returncode == 4
    assert "PURGED" in result.stderr
    assert "kept 30 days" in result.stderr
    assert not (tmp_path / "out" / f"{uid}.dcm").exists()


def test_export_shows_progress_on_a_terminal_for_large_files(spool: Spool, tmp_path: Path) -> None:
    content = os.urandom(9_500_000)
    spool_id, uid = spool.add(content=content, wrap=False, content_type=ContentType.PIXELS)
    primary, secondary = os.openpty()
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "spool",
                "export",
                str(spool_id),
                "--to",
                str(tmp_path / "out"),
                "--config",
                str(spool.config),
            ],
            stdout=subprocess.PIPE,
            stderr=secondary,
            timeout=60,
            check=False,
        )
        os.close(secondary)
        secondary = -1
        drawn = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        if secondary >= 0:
            os.close(secondary)
        os.close(primary)
    assert proc.returncode == 0
    assert (tmp_path / "out" / f"{uid}.raw").read_bytes() == content
    assert b"\r[" in drawn
    assert b"100% 9.5/9.5 MB" in drawn
