"""Real worklist SCPs for tests: Orthanc's worklist plugin, DCMTK wlmscpfs, and a
pynetdicom SCP that answers more than asked (to see the C-CANCEL).

Items are written as ``.wl`` files with DCMTK's ``dump2dcm -g +te`` from a dump in
the item's own character set (CONTEXT.md §4), so the servers read exactly what a
RIS export would hold.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityWorklistInformationFind

from gateway.demo.local_orthanc import OrthancProcess, free_port

WORKLIST_PLUGIN = "libModalityWorklists.so"
_CODECS = {"ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8", "": "ascii"}


@dataclass(frozen=True)
class Item:
    """One scheduled procedure step as a RIS would export it."""

    patient_name: str
    patient_id: str
    study_uid: str
    sps_id: str
    day: str  # YYYYMMDD
    station: str = "DERMGATE"
    modality: str = "XC"
    accession: str = ""
    birth_date: str = ""
    sex: str = ""
    time: str = "1000"
    charset: str = "ISO_IR 100"
    requested_procedure_id: str = "RP1"
    description: str = "Skin check"

    def dump(self) -> str:
        """The item as a DCMTK dump (dump2dcm's input)."""
        root = [
            ("0008,0005", "CS", self.charset),
            ("0008,0050", "SH", self.accession),
            ("0008,0090", "PN", "Referrer^Rita"),
            ("0010,0010", "PN", self.patient_name),
            ("0010,0020", "LO", self.patient_id),
            ("0010,0030", "DA", self.birth_date),
            ("0010,0040", "CS", self.sex),
            ("0020,000d", "UI", self.study_uid),
            ("0032,1060", "LO", self.description),
            ("0040,1001", "SH", self.requested_procedure_id),
        ]
        sps = [
            ("0008,0060", "CS", self.modality),
            ("0040,0001", "AE", self.station),
            ("0040,0002", "DA", self.day),
            ("0040,0003", "TM", self.time),
            ("0040,0007", "LO", self.description),
            ("0040,0009", "SH", self.sps_id),
            ("0040,0020", "CS", "SCHEDULED"),
        ]
        lines = [f"({tag}) {vr} [{value}]" for tag, vr, value in root if value]
        lines += ["(0040,0100) SQ", "(fffe,e000) -"]
        lines += [f"({tag}) {vr} [{value}]" for tag, vr, value in sps if value]
        lines += ["(fffe,e00d) -", "(fffe,e0dd) -"]
        return "\n".join(lines) + "\n"


def write_items(folder: Path, items: list[Item]) -> None:
    """Write each item as ``<sps_id>.wl`` into ``folder`` with ``dump2dcm -g +te``."""
    folder.mkdir(parents=True, exist_ok=True)
    for item in items:
        source = folder / f"{item.sps_id}.dump"
        source.write_bytes(item.dump().encode(_CODECS[item.charset]))
        subprocess.run(
            ["dump2dcm", "-g", "+te", str(source), str(folder / f"{item.sps_id}.wl")],
            check=True,
            capture_output=True,
        )
        source.unlink()


def clear_items(folder: Path) -> None:
    """Remove every ``.wl`` file from ``folder``."""
    for path in folder.glob("*.wl"):
        path.unlink()


@dataclass
class WorklistServer:
    """A running worklist SCP: where to reach it and the folder it serves."""

    kind: str
    ae_title: str
    port: int
    folder: Path
    stop: Any = None

    def toml(self, **extra: object) -> str:
        """A ``[worklist]`` section for this server."""
        lines = [
            "[worklist]",
            f'ae_title = "{self.ae_title}"',
            'host = "127.0.0.1"',
            f"port = {self.port}",
        ]
        for key, value in extra.items():
            text = f'"{value}"' if isinstance(value, str) else str(value).lower()
            lines.append(f"{key} = {text}")
        return "\n".join(lines) + "\n"


def _wait_listening(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def orthanc_worklist(workdir: Path) -> tuple[OrthancProcess, Path]:
    """An Orthanc with only the sample worklist plugin, serving ``workdir/worklists``."""
    folder = workdir / "worklists"
    folder.mkdir(parents=True, exist_ok=True)
    server = OrthancProcess(
        workdir / "orthanc",
        aet="RIS",
        plugins=(WORKLIST_PLUGIN,),
        extra={
            "Worklists": {"Enable": True, "Database": str(folder)},
            "DicomAlwaysAllowFindWorklist": True,
            # Orthanc answers in its DefaultEncoding (Latin1 unless set), whatever
            # the item's or the query's character set: UTF-8 keeps every name.
            "DefaultEncoding": "Utf8",
        },
    )
    server.start()
    return server, folder


@pytest.fixture
def orthanc_mwl(tmp_path: Path) -> Iterator[WorklistServer]:
    """Orthanc 1.10 with its worklist plugin (AE title RIS)."""
    server, folder = orthanc_worklist(tmp_path)
    yield WorklistServer("orthanc", "RIS", server.dicom_port, folder, server)
    server.stop()


class Wlmscpfs:
    """DCMTK's ``wlmscpfs`` serving ``<root>/<AET>/`` (with its empty ``lockfile``)."""

    def __init__(self, root: Path, ae_title: str = "WLMSCP") -> None:
        self.root = root
        self.ae_title = ae_title
        self.folder = root / ae_title
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "lockfile").touch()
        self.port = free_port()
        self.log = root / "wlmscpfs.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server; return once it listens."""
        with open(self.log, "ab") as out:
            self._proc = subprocess.Popen(
                ["wlmscpfs", "-dfp", str(self.root), "--keep-char-set", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _wait_listening(self.port)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None


@pytest.fixture
def wlmscpfs_mwl(tmp_path: Path) -> Iterator[WorklistServer]:
    """DCMTK 3.6.7 ``wlmscpfs`` (AE title WLMSCP)."""
    server = Wlmscpfs(tmp_path / "wlmscpfs")
    server.start()
    yield WorklistServer("wlmscpfs", server.ae_title, server.port, server.folder, server)
    server.stop()


# --------------------------------------------------------------------------- flood


def answer_dataset(item: Item) -> Dataset:
    """An answer as a pynetdicom SCP sends it (for the flooding SCP)."""
    ds = Dataset()
    ds.SpecificCharacterSet = item.charset or "ISO_IR 6"
    ds.PatientName = item.patient_name
    ds.PatientID = item.patient_id
    ds.StudyInstanceUID = item.study_uid
    ds.AccessionNumber = item.accession
    sps = Dataset()
    sps.ScheduledStationAETitle = item.station
    sps.Modality = item.modality
    sps.ScheduledProcedureStepStartDate = item.day
    sps.ScheduledProcedureStepID = item.sps_id
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    return ds


@dataclass
class FloodingWorklist:
    """A pynetdicom worklist SCP that answers ``items`` regardless of the query,
    slowly enough that a C-CANCEL arrives while it still has answers to give."""

    items: list[Item]
    ae_title: str = "FLOOD"
    port: int = field(default_factory=free_port)
    cancelled: threading.Event = field(default_factory=threading.Event)
    queries: list[Dataset] = field(default_factory=list)
    sent: int = 0
    final_status: int = 0x0000
    _server: Any = None

    def _find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        self.queries.append(event.identifier)
        for item in self.items:
            if event.is_cancelled:
                self.cancelled.set()
                yield (0xFE00, None)
                return
            self.sent += 1
            yield (0xFF00, answer_dataset(item))
            time.sleep(0.02)
        yield (self.final_status, None)

    def start(self) -> None:
        """Listen on ``port`` (in a thread)."""
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(ModalityWorklistInformationFind)
        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_FIND, self._find)]
        )

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def toml_server(self) -> WorklistServer:
        """Where to reach this SCP (no folder: it answers from memory)."""
        return WorklistServer("flood", self.ae_title, self.port, Path())
