"""From an export folder to a checked plan of captures (blocking file I/O, no gateway I/O).

:func:`plan_export` reads the manifest, finds the export's files, checks every one
of them (:mod:`.mesh`), resolves the links (OBJ → MTL → textures) and decides,
before a single byte is captured, everything each capture will carry:

* **Export key**: the SHA-256 of the manifest's bytes. It, not the folder name,
  identifies the export (folder and file names may hold patient names, and
  capture ids are shown by ``dermgate spool list``).
* **Capture ids**: ``<export key, 16 hex>-<n>-<file SHA-256, 16 hex>``: content
  hashes and a position, nothing from a name. A re-offer of the same export (after
  a crash, or the same export copied again) gives the same ids, so intake
  recognises what it already holds.
* **UIDs** (derived, uuid5 in DermGate's namespace): the Study from the scanner
  serial and the export key; a Series per role (meshes 1, materials 2, textures 3);
  each SOP Instance from the study, its position and its content hash; one Frame
  of Reference per export. Files can therefore name each other's UIDs before any
  of them is received, and a re-offer produces the same objects.
* **Links** (``offer.extra``, :class:`gateway.dicom.surface.ModelFileLinks`): for
  an OBJ the MTL files it names (``mtllib``) with the exact string used; for an
  MTL each texture (``map_Kd`` …); series and instance numbers for everyone.

It raises :class:`ExportIncomplete` while the export is still being copied (no
manifest yet, a listed file missing or shorter than listed) and
:class:`~drivers.scanner_export.manifest.ExportRefused` when it can never be taken.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Final

from drivers.scanner_export.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    ExportRefused,
    Manifest,
    parse_manifest,
)
from drivers.scanner_export.mesh import check_image, check_stl, scan_mtl, scan_obj
from gateway.capture import (
    ContentType,
    DeviceClass,
    DeviceIdentity,
    InstanceUIDs,
    PatientContext,
)
from gateway.dicom.errors import WrapError
from gateway.dicom.photo import check_native_image
from gateway.dicom.surface import (
    SOP_CLASS_FOR,
    VL_PHOTOGRAPHIC_SOP_CLASS,
    LinkedInstance,
    ModelFileLinks,
    ModelRole,
)
from gateway.dicom.uids import derived_uid

__all__ = ["ExportIncomplete", "ExportPlan", "PlannedFile", "plan_export"]

CONTENT_TYPES: Final[dict[str, ContentType]] = {
    ".obj": ContentType.OBJ,
    ".mtl": ContentType.MTL,
    ".stl": ContentType.STL,
    ".jpg": ContentType.JPEG,
    ".jpeg": ContentType.JPEG,
    ".png": ContentType.PNG,
    ".tif": ContentType.TIFF,
    ".tiff": ContentType.TIFF,
}
_ROLE: Final[dict[ContentType, ModelRole]] = {
    ContentType.OBJ: ModelRole.MESH,
    ContentType.STL: ModelRole.MESH,
    ContentType.MTL: ModelRole.MATERIAL,
    ContentType.JPEG: ModelRole.TEXTURE,
    ContentType.PNG: ModelRole.TEXTURE,
    ContentType.TIFF: ModelRole.TEXTURE,
}
SERIES_NUMBER: Final[dict[ModelRole, int]] = {
    ModelRole.MESH: 1,
    ModelRole.MATERIAL: 2,
    ModelRole.TEXTURE: 3,
}
#: Captures are offered textures first and meshes last, so that when a mesh
#: reaches the PACS what it names is usually there already.
_OFFER_ORDER: Final = (ModelRole.TEXTURE, ModelRole.MATERIAL, ModelRole.MESH)
_CHUNK: Final = 1 << 20


class ExportIncomplete(Exception):
    """The export is still being written; look again later."""


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """One capture of an export: which file, what it is, and what it will carry."""

    path: Path
    content_type: ContentType
    role: ModelRole
    size: int
    sha256: str
    capture_id: str
    uids: InstanceUIDs
    links: ModelFileLinks


@dataclass(frozen=True, slots=True)
class ExportPlan:
    """A checked export: the scanner, the patient, and its captures in offer order."""

    manifest: Manifest
    identity: DeviceIdentity
    patient: PatientContext | None
    files: tuple[PlannedFile, ...]

    @property
    def label(self) -> str:
        """How logs name the export: a prefix of its key, never its folder name."""
        return f"export {self.manifest.key[:12]}"


@dataclass(frozen=True, slots=True)
class _Found:
    rel: str
    path: Path
    content_type: ContentType
    size: int
    sha256: str


def plan_export(entry: Path, today: date) -> ExportPlan:
    """Check the export at ``entry`` and plan its captures (blocking)."""
    if not entry.is_dir():
        raise ExportRefused("not an export: a single file instead of an export folder")
    manifest_path = entry / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ExportIncomplete("no manifest yet")
    with manifest_path.open("rb") as fh:
        data = fh.read(MAX_MANIFEST_BYTES + 1)
    manifest = parse_manifest(data, today)
    found = _collect(entry, manifest)
    meshes = [f for f in found if _ROLE[f.content_type] is ModelRole.MESH]
    if not meshes:
        raise ExportRefused("the export holds no mesh (no OBJ or STL file)")
    by_rel = {f.rel: f for f in found}

    names: dict[str, tuple[str, ...]] = {}
    for f in found:
        names[f.rel] = _check(f)
    plan = _assign(entry, manifest, found, names, by_rel)
    return plan


def _collect(entry: Path, manifest: Manifest) -> list[_Found]:
    """The export's files, sized and hashed; listed ones checked against the manifest."""
    found: list[_Found] = []
    if manifest.files is None:
        for path in sorted(entry.rglob("*")):
            rel = path.relative_to(entry).as_posix()
            if not path.is_file() or rel == MANIFEST_NAME or _hidden(rel):
                continue
            content_type = CONTENT_TYPES.get(path.suffix.lower())
            if content_type is not None:
                size, sha = _hash(path)
                found.append(_Found(rel, path, content_type, size, sha))
        return found
    for listed in manifest.files:
        rel = _safe_relative(listed.name)
        content_type = CONTENT_TYPES.get(posixpath.splitext(rel)[1].lower())
        if content_type is None:
            raise ExportRefused("the manifest lists a file that is not a mesh, material or image")
        path = entry / rel
        if not path.is_file():
            raise ExportIncomplete("a listed file is not there yet")
        current = path.stat().st_size
        if listed.size is not None and current < listed.size:
            raise ExportIncomplete("a listed file is shorter than listed")
        if listed.size is not None and current > listed.size:
            raise ExportRefused("a file is larger than the manifest says")
        size, sha = _hash(path)
        if listed.sha256 is not None and sha != listed.sha256:
            raise ExportRefused("a file's content differs from the manifest's checksum")
        found.append(_Found(rel, path, content_type, size, sha))
    return found


def _check(f: _Found) -> tuple[str, ...]:
    """Check one file; return the names it uses (MTL libraries or textures)."""
    with f.path.open("rb") as fh:
        if f.content_type is ContentType.OBJ:
            return scan_obj(fh).material_libraries
        if f.content_type is ContentType.MTL:
            return scan_mtl(fh)
        if f.content_type is ContentType.STL:
            check_stl(fh)
            return ()
        check_image(fh, f.content_type.name)
    if f.content_type in (ContentType.PNG, ContentType.TIFF):
        # Decoded as the writer will (bounded: 8192 x 8192): found only at wrapping,
        # the mesh would reach the PACS naming a texture that never follows.
        try:
            check_native_image(f.path, f.content_type)
        except WrapError as err:
            why = str(err).split("; the capture is kept")[0]
            raise ExportRefused(f"a texture cannot be carried in DICOM: {why}") from err
    return ()


def _assign(
    entry: Path,
    manifest: Manifest,
    found: list[_Found],
    names: dict[str, tuple[str, ...]],
    by_rel: dict[str, _Found],
) -> ExportPlan:
    scanner = manifest.scanner
    study = derived_uid("scanner-export-study", f"{scanner.serial}\x00{manifest.key}")
    frame = derived_uid("scanner-export-frame-of-reference", study)
    series = {role: derived_uid(f"scanner-export-series-{role.value}", study) for role in ModelRole}
    ordered = sorted(found, key=lambda f: (_OFFER_ORDER.index(_ROLE[f.content_type]), f.rel))
    numbers: dict[ModelRole, int] = {}
    uids: dict[str, InstanceUIDs] = {}
    position: dict[str, int] = {}
    for n, f in enumerate(ordered, start=1):
        role = _ROLE[f.content_type]
        numbers[role] = numbers.get(role, 0) + 1
        position[f.rel] = numbers[role]
        uids[f.rel] = InstanceUIDs(
            study=study,
            series=series[role],
            sop_instance=derived_uid(f"scanner-export-instance-{n}-{f.sha256}", study),
        )

    def linked(
        source: _Found, wanted: tuple[ContentType, ...], what: str
    ) -> tuple[LinkedInstance, ...]:
        refs = []
        for name in names[source.rel]:
            target_rel = _resolve(source.rel, name)
            target = by_rel.get(target_rel) if target_rel is not None else None
            if target is None or target.content_type not in wanted:
                raise ExportRefused(f"{what} is missing from the export")
            sop_class = SOP_CLASS_FOR.get(target.content_type, VL_PHOTOGRAPHIC_SOP_CLASS)
            refs.append(
                LinkedInstance(
                    uri=name,
                    sop_class_uid=sop_class,
                    series_uid=uids[target.rel].series,
                    sop_instance_uid=uids[target.rel].sop_instance,
                )
            )
        return tuple(refs)

    planned = []
    for n, f in enumerate(ordered, start=1):
        role = _ROLE[f.content_type]
        if f.content_type is ContentType.OBJ:
            refs = linked(f, (ContentType.MTL,), "a material library the mesh names")
        elif f.content_type is ContentType.MTL:
            refs = linked(
                f,
                (ContentType.JPEG, ContentType.PNG, ContentType.TIFF),
                "a texture the material library names",
            )
        else:
            refs = ()
        links = ModelFileLinks(
            role=role,
            series_number=SERIES_NUMBER[role],
            instance_number=position[f.rel],
            export_key=manifest.key,
            references=refs,
            frame_of_reference_uid=frame if role is ModelRole.MESH else "",
            units=manifest.units,
        )
        planned.append(
            PlannedFile(
                path=f.path,
                content_type=f.content_type,
                role=role,
                size=f.size,
                sha256=f.sha256,
                capture_id=f"{manifest.key[:16]}-{n:02d}-{f.sha256[:16]}",
                uids=uids[f.rel],
                links=links,
            )
        )
    patient = manifest.patient
    return ExportPlan(
        manifest=manifest,
        identity=DeviceIdentity(
            manufacturer=scanner.manufacturer,
            model=scanner.model,
            serial_number=scanner.serial,
            software_versions=(scanner.software,),
            device_class=DeviceClass.BODY_SCANNER,
        ),
        patient=None
        if patient.empty
        else PatientContext(
            patient_name=patient.name,
            patient_id=patient.id,
            issuer_of_patient_id=patient.issuer,
            birth_date=patient.birth_date,
            sex=patient.sex,
        ),
        files=tuple(planned),
    )


def _safe_relative(name: str) -> str:
    """A listed name as a path inside the export; refuses absolute and ``..`` paths."""
    rel = posixpath.normpath(name.replace("\\", "/")) if name else ""
    if not rel or rel.startswith(("/", "../")) or rel in (".", "..") or _hidden(rel):
        raise ExportRefused("the manifest lists a file outside the export folder")
    if rel == MANIFEST_NAME:
        raise ExportRefused("the manifest lists itself as a file of the export")
    return rel


def _resolve(source_rel: str, name: str) -> str | None:
    """The export-relative path a file's reference ``name`` points at (None: outside)."""
    base = posixpath.dirname(source_rel)
    rel = posixpath.normpath(posixpath.join(base, name.replace("\\", "/")))
    if rel.startswith(("/", "../")) or rel == "..":
        return None
    return rel


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def _hash(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
