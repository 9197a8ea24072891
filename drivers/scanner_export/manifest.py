"""The export manifest of a 3D total-body scanner (sans-I/O: bytes in, model out).

Reference format (DermGate defines it; vendors publish none, DESIGN §4). An export
is a sub-folder of the watched folder holding the mesh files and ``manifest.json``,
which the scanner writes **last**: its presence says the export is complete::

    {
      "format": "dermgate-scanner-export/1",
      "scanner": {"manufacturer": "…", "model": "…", "serial": "…", "software": "…"},
      "scan_time": "2026-11-30T14:05:00+01:00",        ISO 8601; optional
      "operator": "…",                                  optional
      "units": "mm",                                    mm | cm | m; default mm
      "patient": {"name": "Family^Given", "id": "…", "issuer": "…",
                  "birth_date": "19700131", "sex": "F"},   optional, every field too
      "files": [{"name": "body.obj", "size": 123, "sha256": "…"}, …],
      "anatomic_site": "66643007",                      optional: CID 4029 SNOMED CT value
      "laterality": "L",                                optional: R | L | B | U
      "lesion_id": "L03"                                optional: the scanner's lesion label
    }

The lesion fields apply to every file of the export (a scan centred on one
lesion); ``anatomic_site`` is a SNOMED CT code value (digits, ``SCT:`` prefix
allowed), ``lesion_id`` at most 64 printable characters without a backslash. A
present but invalid one refuses the export, like any other field.

``files`` lists the export's files (paths relative to the export folder, ``/``
separated); ``size`` and ``sha256`` are optional. Without ``files`` every mesh,
material and image file in the folder is part of the export.

Patient fields: rules (a manifest breaking them is refused, never guessed at; the
reason names the field, never its value):

* **name** is a DICOM Person Name: ``Family^Given^Middle^Prefix^Suffix``, up to
  three ``=``-separated groups (alphabetic, ideographic, phonetic). Any script is
  kept as it is: non-Latin names are valid DICOM, written as UTF-8 (Specific
  Character Set ISO_IR 192). Refused: more than five components or three groups,
  a component longer than 64 characters (truncating a name could make it another
  patient's), control characters or a backslash. Surrounding spaces are removed.
* **id** and **issuer**: at most 64 characters, no control characters or
  backslash.
* **birth_date**: ``YYYYMMDD`` or ``YYYY-MM-DD`` (rewritten as ``YYYYMMDD``), a real
  calendar date, not after the scan (or today). Anything else is refused.
* **sex**: ``M``, ``F``, ``O`` or empty; ``male``/``female``/``other`` in any case
  are corrected to the code. Anything else is refused.
* A missing field is unknown and stays empty: a placeholder is never invented.

Scanner fields: manufacturer, model, serial and software are required (they fill
type 1 equipment attributes); each at most 64 characters.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Final

__all__ = [
    "MANIFEST_NAME",
    "ExportRefused",
    "FileEntry",
    "LesionFields",
    "Manifest",
    "PatientFields",
    "ScannerFields",
    "parse_manifest",
]

MANIFEST_NAME: Final = "manifest.json"
FORMAT: Final = "dermgate-scanner-export/1"
#: A manifest is small; a bigger file is not one (and is not read whole).
MAX_MANIFEST_BYTES: Final = 1 << 20
MAX_FILES: Final = 10_000
_LO_MAX: Final = 64
_PN_COMPONENT_MAX: Final = 64
_FORBIDDEN: Final = re.compile(r"[\x00-\x1f\x7f\\]")
_UNITS: Final = ("mm", "cm", "m")
_SEX: Final = {"": "", "M": "M", "F": "F", "O": "O", "MALE": "M", "FEMALE": "F", "OTHER": "O"}


class ExportRefused(Exception):
    """The export can never be taken as it is; ``str(err)`` is the plain-words reason.

    Reasons never contain patient data or file names (names may hold patient names).
    """


@dataclass(frozen=True, slots=True)
class ScannerFields:
    """Who made the export (fills the equipment modules)."""

    manufacturer: str
    model: str
    serial: str
    software: str


@dataclass(frozen=True, slots=True)
class PatientFields:
    """Patient identity as the scanner gave it, already checked and normalised."""

    name: str = ""
    id: str = ""
    issuer: str = ""
    birth_date: str = ""
    sex: str = ""

    @property
    def empty(self) -> bool:
        """True when the scanner said nothing about the patient."""
        return not (self.name or self.id or self.birth_date or self.sex)


@dataclass(frozen=True, slots=True)
class LesionFields:
    """The lesion the scanner named for the whole export (each None: not said)."""

    anatomic_site: str | None = None
    laterality: str | None = None
    lesion_id: str | None = None


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file the manifest lists."""

    name: str
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """A parsed, validated manifest; ``key`` is the SHA-256 of its bytes (hex)."""

    key: str
    scanner: ScannerFields
    scan_time: datetime | None
    operator: str
    units: str
    patient: PatientFields
    files: tuple[FileEntry, ...] | None = field(default=None)
    lesion: LesionFields = field(default_factory=LesionFields)


def parse_manifest(data: bytes, today: date) -> Manifest:
    """Parse and check a manifest; raise :class:`ExportRefused` with the reason.

    ``today`` bounds the birth date when the manifest gives no scan time.
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise ExportRefused("the manifest is too large to be an export manifest")
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ExportRefused("the manifest is not valid UTF-8 JSON") from err
    if not isinstance(raw, dict):
        raise ExportRefused("the manifest is not a JSON object")
    fmt = raw.get("format", FORMAT)
    if fmt != FORMAT:
        raise ExportRefused("the manifest format is not dermgate-scanner-export/1")
    scanner = _scanner(raw.get("scanner"))
    scan_time = _scan_time(raw.get("scan_time"))
    units = raw.get("units", "mm")
    if units not in _UNITS:
        raise ExportRefused("the manifest's units are not one of mm, cm, m")
    operator = _text(raw.get("operator", ""), "operator", _LO_MAX)
    bound = scan_time.date() if scan_time is not None else today
    patient = _patient(raw.get("patient"), bound)
    return Manifest(
        key=hashlib.sha256(data).hexdigest(),
        scanner=scanner,
        scan_time=scan_time,
        operator=operator,
        units=str(units),
        patient=patient,
        files=_files(raw.get("files")),
        lesion=_lesion(raw),
    )


def _lesion(raw: dict[str, Any]) -> LesionFields:
    site = raw.get("anatomic_site")
    if site is not None:
        if not isinstance(site, str):
            raise ExportRefused("the manifest's anatomic site is not a string")
        site = site.strip()
        site = site[4:] if site.upper().startswith("SCT:") else site
        if not re.fullmatch(r"[0-9]{6,18}", site):
            raise ExportRefused("the manifest's anatomic site is not a SNOMED CT code value")
    laterality = raw.get("laterality")
    if laterality is not None and laterality not in ("R", "L", "B", "U"):
        raise ExportRefused("the manifest's laterality is not R, L, B or U")
    label = _text(raw.get("lesion_id"), "lesion id", _LO_MAX) or None
    if label is not None and not label.isprintable():
        raise ExportRefused("the manifest's lesion id contains non-printable characters")
    return LesionFields(site or None, laterality, label)


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ExportRefused(f"the manifest's {what} is not a JSON object")
    return value


def _text(value: Any, what: str, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ExportRefused(f"the manifest's {what} is not a string")
    text = value.strip()
    if len(text) > limit:
        raise ExportRefused(f"the manifest's {what} is longer than {limit} characters")
    if _FORBIDDEN.search(text):
        raise ExportRefused(f"the manifest's {what} contains control characters or a backslash")
    return text


def _scanner(value: Any) -> ScannerFields:
    raw = _object(value, "scanner")
    fields = {
        key: _text(raw.get(key), f"scanner {key}", _LO_MAX)
        for key in ("manufacturer", "model", "serial", "software")
    }
    missing = [key for key, text in fields.items() if not text]
    if missing:
        raise ExportRefused(
            f"the manifest does not name the scanner's {', '.join(missing)}, which DICOM requires"
        )
    return ScannerFields(**fields)


def _scan_time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ExportRefused("the manifest's scan time is not a string")
    try:
        return datetime.fromisoformat(value)
    except ValueError as err:
        raise ExportRefused("the manifest's scan time is not an ISO 8601 date and time") from err


def _patient(value: Any, bound: date) -> PatientFields:
    raw = _object(value, "patient")
    return PatientFields(
        name=_person_name(raw.get("name")),
        id=_text(raw.get("id"), "patient id", _LO_MAX),
        issuer=_text(raw.get("issuer"), "patient id issuer", _LO_MAX),
        birth_date=_birth_date(raw.get("birth_date"), bound),
        sex=_sex(raw.get("sex")),
    )


def _person_name(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ExportRefused("the manifest's patient name is not a string")
    name = value.strip()
    if _FORBIDDEN.search(name):
        raise ExportRefused(
            "the manifest's patient name contains control characters or a backslash"
        )
    groups = name.split("=")
    if len(groups) > 3:
        raise ExportRefused("the manifest's patient name has more than three = groups")
    for group in groups:
        components = group.split("^")
        if len(components) > 5:
            raise ExportRefused("the manifest's patient name has more than five ^ components")
        if any(len(c) > _PN_COMPONENT_MAX for c in components):
            raise ExportRefused(
                "a component of the manifest's patient name is longer than 64 characters"
            )
    return name


def _birth_date(value: Any, bound: date) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise ExportRefused("the manifest's patient birth date is not a string")
    text = value.strip()
    compact = text.replace("-", "") if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else text
    if not re.fullmatch(r"\d{8}", compact):
        raise ExportRefused("the manifest's patient birth date is not YYYYMMDD or YYYY-MM-DD")
    try:
        born = date(int(compact[:4]), int(compact[4:6]), int(compact[6:]))
    except ValueError as err:
        raise ExportRefused("the manifest's patient birth date is not a calendar date") from err
    if born > bound or born.year < 1850:
        raise ExportRefused("the manifest's patient birth date is after the scan or implausible")
    return compact


def _sex(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or value.strip().upper() not in _SEX:
        raise ExportRefused("the manifest's patient sex is not M, F, O or empty")
    return _SEX[value.strip().upper()]


def _files(value: Any) -> tuple[FileEntry, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_FILES:
        raise ExportRefused("the manifest's file list is not a list of files")
    entries = []
    seen: set[str] = set()
    for item in value:
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ExportRefused("an entry of the manifest's file list has no name")
        name = item["name"]
        size = item.get("size")
        sha = item.get("sha256")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise ExportRefused("a file size in the manifest is not a byte count")
        if sha is not None and (
            not isinstance(sha, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha)
        ):
            raise ExportRefused("a file checksum in the manifest is not a SHA-256")
        if name in seen:
            raise ExportRefused("the manifest lists a file twice")
        seen.add(name)
        entries.append(FileEntry(name, size, sha.lower() if sha else None))
    return tuple(entries)
