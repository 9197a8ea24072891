"""The demo's worklist: two patients scheduled for today in its private Orthanc.

Written with pydicom at demo start (DCMTK's ``dump2dcm`` may not be installed on the
machine running the demo) as ``.wl`` files that Orthanc's sample worklist plugin
(``libModalityWorklists.so``) reads from its folder on every C-FIND. The patients
are made up and carry an issuer (``DERMGATE-DEMO``) that no clinic uses; their
Study Instance UIDs are derived from the date, so a demo run again on the same day
adds to the same studies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from gateway.demo.local_orthanc import PLUGIN_DIR

__all__ = [
    "DEMO_ISSUER",
    "WORKLIST_PLUGIN",
    "DemoPatient",
    "demo_patients",
    "orthanc_worklist_settings",
    "worklist_plugin_available",
    "write_demo_worklist",
]

WORKLIST_PLUGIN = "libModalityWorklists.so"
DEMO_ISSUER = "DERMGATE-DEMO"
_MWL_FIND = UID("1.2.840.10008.5.1.4.31")  # Modality Worklist Information Model - FIND


@dataclass(frozen=True, slots=True)
class DemoPatient:
    """One scheduled demo patient (made up)."""

    name: str
    patient_id: str
    birth_date: str
    sex: str
    accession_number: str
    procedure: str
    time: str


def demo_patients() -> tuple[DemoPatient, DemoPatient]:
    """The two patients the demo schedules for today."""
    return (
        DemoPatient(
            "Demo^Anna", "DEMO-0001", "19800214", "F", "DEMO-ACC-0001", "Mole check", "0900"
        ),
        DemoPatient(
            "Beispiel^Jörg", "DEMO-0002", "19671103", "M", "DEMO-ACC-0002", "Lesion follow-up",
            "0930",
        ),
    )  # fmt: skip


def worklist_plugin_available() -> bool:
    """True if Debian's ``orthanc`` ships the sample worklist plugin here."""
    return (PLUGIN_DIR / WORKLIST_PLUGIN).exists()


def orthanc_worklist_settings(folder: Path) -> dict[str, object]:
    """Orthanc configuration for the sample plugin serving ``folder``."""
    return {
        "Worklists": {"Enable": True, "Database": str(folder)},
        "DicomAlwaysAllowFindWorklist": True,
        "DefaultEncoding": "Utf8",  # answers in UTF-8: every name survives
    }


def _item(patient: DemoPatient, day: date, station: str, modality: str, n: int) -> Dataset:
    stamp = day.strftime("%Y%m%d")
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.AccessionNumber = patient.accession_number
    ds.ReferringPhysicianName = "Demo^Referrer"
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = DEMO_ISSUER
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["dermgate-demo", stamp, patient.patient_id])
    ds.RequestedProcedureID = f"RP{n:04}"
    ds.RequestedProcedureDescription = patient.procedure
    sps = Dataset()
    sps.Modality = modality
    sps.ScheduledStationAETitle = station
    sps.ScheduledProcedureStepStartDate = stamp
    sps.ScheduledProcedureStepStartTime = patient.time
    sps.ScheduledProcedureStepDescription = patient.procedure
    sps.ScheduledProcedureStepID = f"SPS{n:04}"
    sps.ScheduledProcedureStepStatus = "SCHEDULED"
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _MWL_FIND
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def write_demo_worklist(folder: Path, day: date, *, station: str, modality: str) -> None:
    """Write the demo patients as ``.wl`` files scheduled on ``day`` for ``station``."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.wl"):
        old.unlink()
    for n, patient in enumerate(demo_patients(), 1):
        ds = _item(patient, day, station, modality, n)
        dcmwrite(folder / f"demo-{n}.wl", ds, enforce_file_format=True)
