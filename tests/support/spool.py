"""A spool built without a running service, and the technician's commands run against it.

The ledger functions the service uses write the rows, and real files (device JPEGs,
Part 10 files) lie in the spool folders. ``dermgate`` runs ``dermgate spool ...``
as the technician would; ``run_once`` runs ``dermgate run`` expected to refuse.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.core.capture import (
    CaptureOffer,
    ContentType,
    DermoscopySettings,
    InstanceUIDs,
    Laterality,
    PatientContext,
    Polarization,
)
from gateway.core.uids import new_uid
from gateway.dicom.dermoscopy import build_dermoscopic_photography
from gateway.dicom.jpeg import read_jpeg_info
from gateway.dicom.part10 import write_part10_encapsulated
from gateway.spool import ledger as db
from gateway.spool.dirs import SpoolDirs
from tests.support.dicom_files import DEVICE, GATEWAY, make_jpeg

PATIENT = PatientContext(
    patient_name="Doe^Jane",
    patient_id="PID-4711",
    birth_date="19700101",
    sex="F",
    accession_number="ACC-0815",
)


SECRETS = ("Doe^Jane", "Doe", "PID-4711", "19700101", "ACC-0815")


@dataclass
class Spool:
    """A spool on disk, its open ledger and the configuration that points at it."""

    config: Path
    dirs: SpoolDirs
    conn: sqlite3.Connection
    seed: int = 0

    def add(
        self,
        *,
        content: bytes | None = None,
        wrap: bool = True,
        patient: PatientContext | None = None,
        content_type: ContentType = ContentType.JPEG,
        supplied: PatientContext | None = None,
    ) -> tuple[int, str]:
        """Record a capture (device file ``content``, a JPEG by default); return id and UID."""
        self.seed += 1
        uids = InstanceUIDs(new_uid(), new_uid(), new_uid())
        raw = self.dirs.raw / f"{uids.sop_instance}.raw"
        raw.write_bytes(content if content is not None else make_jpeg(self.seed))
        offer = CaptureOffer(
            device_capture_id=f"{self.seed:06d}",
            content_type=content_type,
            patient=supplied,  # patient fields the device itself sent (a 3D scanner)
            settings=DermoscopySettings(polarization=Polarization.POLARIZED, magnification=10.0),
            anatomic_site="39937001",
            laterality=Laterality.LEFT,
            lesion_id="LES-7",
        )
        spool_id = db.insert_capture(
            self.conn,
            driver="serial-dermatoscope",
            device=DEVICE,
            offer=offer,
            uids=uids,
            raw_name=raw.name,
            raw_size=raw.stat().st_size,
            raw_sha256=hashlib.sha256(raw.read_bytes()).hexdigest(),
        )
        if wrap:
            dataset = build_dermoscopic_photography(
                identity=DEVICE,
                offer=offer,
                uids=uids,
                jpeg=read_jpeg_info(raw),
                gateway=GATEWAY,
                patient=patient,
                now=datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
            )
            name = f"{uids.sop_instance}.dcm"
            write_part10_encapsulated(dataset, raw, self.dirs.dicom / name)
            db.mark_wrapped(
                self.conn,
                spool_id,
                dicom_name=name,
                sop_class_uid=str(dataset.SOPClassUID),
                transfer_syntax_uid=str(dataset.file_meta.TransferSyntaxUID),
                destinations=["pacs"],
                now=time.time(),
            )
        return spool_id, uids.sop_instance

    def capture(self, spool_id: int) -> sqlite3.Row:
        """The capture's ledger row."""
        row = self.conn.execute("SELECT * FROM captures WHERE id = ?", (spool_id,)).fetchone()
        assert row is not None
        return row

    def delivery(self, spool_id: int) -> sqlite3.Row:
        """The capture's delivery to "pacs"."""
        row = self.conn.execute(
            "SELECT * FROM deliveries WHERE capture_id = ? AND destination = 'pacs'", (spool_id,)
        ).fetchone()
        assert row is not None
        return row


def write_config(tmp_path: Path, state_dir: Path) -> Path:
    """A minimal configuration: the state folder and one destination."""
    path = tmp_path / "dermgate.toml"
    path.write_text(
        f"""
[gateway]
id = "test-box-01"
state_dir = "{state_dir}"

[[destinations]]
name = "pacs"
kind = "dicom"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = 4242
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    """An empty spool with its ledger."""
    state_dir = tmp_path / "state"
    dirs = SpoolDirs(state_dir / "spool")
    dirs.create()
    conn = db.open_ledger(state_dir / "ledger.sqlite3")
    yield Spool(write_config(tmp_path, state_dir), dirs, conn)
    conn.close()


def dermgate(*args: str | Path, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``dermgate spool ARGS --config CONFIG``."""
    command = [sys.executable, "-m", "gateway.cli", "spool", *map(str, args)]
    if config is not None:
        command += ["--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def run_once(config: Path, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``dermgate run`` expected to refuse: it must exit by itself within ``timeout``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(
            f"`dermgate run` started instead of refusing:\n{err[-3000:]}"
        ) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def lose_ledger(state_dir: Path) -> Path:
    """Truncate the ledger to 0 bytes (and drop its WAL files), as a bad crash can."""
    ledger = state_dir / "ledger.sqlite3"
    for suffix in ("-wal", "-shm"):
        Path(f"{ledger}{suffix}").unlink(missing_ok=True)
    ledger.write_bytes(b"")
    return ledger
