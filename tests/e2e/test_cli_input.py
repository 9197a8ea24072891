"""Bad input on the command line gets a clear answer, never a traceback."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from gateway.core.capture import CaptureOffer, InstanceUIDs
from gateway.core.uids import new_uid
from gateway.spool import ledger as db
from tests.support.dicom_files import DEVICE
from tests.support.spool import Spool, dermgate

HUGE = "99999999999999999999999"


def test_a_huge_spool_id_is_no_such_capture(spool: Spool, tmp_path: Path) -> None:
    spool.add()
    for action in (
        ("show", HUGE),
        ("show", HUGE, "--reveal"),
        ("retry", HUGE),
        ("export", HUGE, "--to", tmp_path / "out"),
        ("show", "9" * 5000),
    ):
        result = dermgate(*action, config=spool.config)
        assert result.returncode == 3, (action[0], result.stderr[-2000:])
        assert "Traceback" not in result.stderr
        assert "no capture with spool id" in result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr


def test_a_spool_id_in_other_digits_is_no_such_capture(spool: Spool) -> None:
    for _ in range(3):
        spool.add(wrap=False)  # spool id 3 exists: "٣" must not be taken for it
    for ref in ("٣", "３", "³", "½"):
        result = dermgate("show", ref, config=spool.config)
        assert result.returncode == 3, (ref, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        assert "no capture with spool id" in result.stderr
        assert result.stdout == ""
    assert dermgate("show", "3", config=spool.config).returncode == 0


def test_listing_into_head_ends_quietly(spool: Spool) -> None:
    """`spool list --json | head -1`: no BrokenPipeError, the status a closed pipe gives."""
    for n in range(2000):  # several times what a pipe buffer (64 KiB) and `head` hold
        uids = InstanceUIDs(new_uid(), new_uid(), new_uid())
        db.insert_capture(
            spool.conn,
            driver="serial-dermatoscope",
            device=DEVICE,
            offer=CaptureOffer(device_capture_id=f"{n:06d}"),
            uids=uids,
            raw_name=f"{uids.sop_instance}.raw",
            raw_size=1,
            raw_sha256=hashlib.sha256(b"x").hexdigest(),
        )
    listed = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "spool", "list", "--config", str(spool.config)],
        capture_output=True,
        check=True,
    ).stdout
    assert len(listed) > 4 * 65536, "the listing must overflow the pipe, or nothing breaks it"
    for listing in ("list --json", "list"):
        command = (
            f"{sys.executable} -m gateway.cli spool {listing} --config {spool.config} | head -1"
        )
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.stderr == "", result.stderr
        assert len(result.stdout.splitlines()) == 1
        assert result.returncode == 141, "128 + SIGPIPE, as `seq 1 1000000 | head -1` gives"
