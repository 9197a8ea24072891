"""From an export folder to a checked plan of captures (blocking file I/O, no gateway I/O).

:func:`plan_export` reads the manifest, finds the export's files, checks every one
of them (:mod:`.mesh`), resolves the links (OBJ → MTL → textures) and decides,
before a single byte is captured, everything each capture will carry. An export
is a real folder holding only folders and regular files with a single name: a
symbolic link anywhere in it (to a file, a folder, or the export folder itself),
a named pipe, socket or device node, or a file with a second hard link refuses
the whole export, and no file of it is opened (never half an export; nothing
from outside the export; nothing that could block). Every file is opened without
following links (:func:`gateway.driver_api.open_regular`). PNG and TIFF
textures larger than ``max_pixels`` (by their header) are refused too, and so is
an export with a file larger than the gateway keeps (``[spool] max_capture_mb``),
judged by its size before it is read.

* **Export key**: the SHA-256 of the manifest's bytes. It, not the folder name,
  identifies the export (folder and file names may hold patient names, and
  capture ids are shown by ``dermgate spool list``).
* **Capture ids**: ``<export key, 16 hex>-<n>-<file SHA-256, 16 hex>``: content
  hashes and a position, nothing from a name. A re-offer of the same export (after
  a crash, or the same export copied again) gives the same ids, so intake
  recognises what it already holds.
* **UIDs** (:func:`gateway.driver_api.plan_model_export`, which derives them in
  DermGate's namespace): the Study from the scanner serial and the export key; a
  Series per role (meshes 1, materials 2, textures 3); each SOP Instance from the
  study, its position in offer order and its content hash; one Frame of Reference
  per export. Files can therefore name each other's UIDs before any
  of them is received, and a re-offer produces the same objects.
* **Links** (``offer.extra``, :class:`gateway.driver_api.ModelFileLinks`): for
  an OBJ the MTL files it names (``mtllib``) with the exact string used; for an
  MTL each texture (``map_Kd`` …); series and instance numbers for everyone.

It raises :class:`ExportIncomplete` while the export is still being copied (no
manifest yet, a listed file missing or shorter than listed) and
:class:`~drivers.scanner_export.manifest.ExportRefused` when it can never be taken.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import BinaryIO, Final

from drivers.scanner_export.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    ExportRefused,
    Manifest,
    parse_manifest,
)
from drivers.scanner_export.mesh import check_image, check_stl, scan_mtl, scan_obj
from gateway.driver_api import (
    DEFAULT_MAX_PIXELS,
    ONLY_REGULAR_FILES,
    CannotCarry,
    ContentType,
    DeviceClass,
    DeviceIdentity,
    InstanceUIDs,
    ModelFile,
    ModelFileLinks,
    ModelRole,
    NotARegularFile,
    PatientContext,
    check_can_carry,
    model_role,
    open_regular,
    plan_model_export,
    special_kind,
    too_large,
)

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


def plan_export(
    entry: Path,
    today: date,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_file_bytes: int | None = None,
) -> ExportPlan:
    """Check the export at ``entry`` and plan its captures (blocking); a file larger
    than ``max_file_bytes`` (the gateway's capture limit) refuses the export."""
    st = entry.lstat()
    if (kind := special_kind(st)) is not None:
        raise ExportRefused(f"not an export folder but {kind}: {ONLY_REGULAR_FILES}")
    if not stat.S_ISDIR(st.st_mode):
        raise ExportRefused("not an export: a single file instead of an export folder")
    regular = _regular_files(entry)
    if MANIFEST_NAME not in regular:
        raise ExportIncomplete("no manifest yet")
    with _open(entry, MANIFEST_NAME) as fh:
        data = fh.read(MAX_MANIFEST_BYTES + 1)
    manifest = parse_manifest(data, today)
    found = _collect(entry, manifest, regular, max_file_bytes)
    meshes = [f for f in found if _role(f) is ModelRole.MESH]
    if not meshes:
        raise ExportRefused("the export holds no mesh (no OBJ or STL file)")
    by_rel = {f.rel: f for f in found}

    names: dict[str, tuple[str, ...]] = {}
    for f in found:
        names[f.rel] = _check(entry, f, max_pixels)
    return _assign(manifest, found, names, by_rel)


def _regular_files(entry: Path) -> list[str]:
    """Every file of the export (relative, ``/``-separated; hidden ones left out),
    by ``lstat`` and without following links; refuses the export when any entry
    is not a folder or a regular file with a single name."""
    files: list[str] = []
    pending = [""]
    while pending:
        prefix = pending.pop()
        with os.scandir(entry / prefix if prefix else entry) as it:
            items = sorted(it, key=lambda item: item.name)
        for item in items:
            if item.name.startswith("."):
                continue
            rel = f"{prefix}{item.name}"
            st = item.stat(follow_symlinks=False)
            if (kind := special_kind(st)) is not None:
                raise ExportRefused(f"the export holds {kind}: {ONLY_REGULAR_FILES}")
            if stat.S_ISDIR(st.st_mode):
                pending.append(rel + "/")
            else:
                files.append(rel)
    return sorted(files)


def _open(entry: Path, rel: str) -> BinaryIO:
    """Open one file of the export without following links (never a pipe)."""
    try:
        return open_regular(entry / rel, under=entry)
    except NotARegularFile as err:  # replaced since the export was listed
        raise ExportRefused(f"the export holds {err}: {ONLY_REGULAR_FILES}") from err


def _collect(
    entry: Path, manifest: Manifest, regular: list[str], max_file_bytes: int | None
) -> list[_Found]:
    """The export's files, sized and hashed; listed ones checked against the manifest.
    A file over ``max_file_bytes`` refuses the export before it is read."""
    found: list[_Found] = []
    if manifest.files is None:
        for rel in regular:
            if rel == MANIFEST_NAME:
                continue
            content_type = CONTENT_TYPES.get(posixpath.splitext(rel)[1].lower())
            if content_type is not None:
                _within(entry.joinpath(rel).lstat().st_size, max_file_bytes)
                size, sha = _hash(entry, rel)
                found.append(_Found(rel, entry / rel, content_type, size, sha))
        return found
    for listed in manifest.files:
        rel = _safe_relative(listed.name)
        content_type = CONTENT_TYPES.get(posixpath.splitext(rel)[1].lower())
        if content_type is None:
            raise ExportRefused("the manifest lists a file that is not a mesh, material or image")
        if rel not in regular:
            raise ExportIncomplete("a listed file is not there yet")
        path = entry / rel
        current = path.lstat().st_size
        if listed.size is not None and current < listed.size:
            raise ExportIncomplete("a listed file is shorter than listed")
        if listed.size is not None and current > listed.size:
            raise ExportRefused("a file is larger than the manifest says")
        _within(current, max_file_bytes)
        size, sha = _hash(entry, rel)
        if listed.sha256 is not None and sha != listed.sha256:
            raise ExportRefused("a file's content differs from the manifest's checksum")
        found.append(_Found(rel, path, content_type, size, sha))
    return found


def _within(size: int, max_file_bytes: int | None) -> None:
    """Refuse the export when one of its files is larger than the gateway keeps."""
    if max_file_bytes is not None and size > max_file_bytes:
        raise ExportRefused(f"a file of the export is too large: {too_large(size, max_file_bytes)}")


def _check(entry: Path, f: _Found, max_pixels: int) -> tuple[str, ...]:
    """Check one file; return the names it uses (MTL libraries or textures)."""
    with _open(entry, f.rel) as fh:
        if f.content_type is ContentType.OBJ:
            return scan_obj(fh).material_libraries
        if f.content_type is ContentType.MTL:
            return scan_mtl(fh)
        if f.content_type is ContentType.STL:
            check_stl(fh)
            return ()
        check_image(fh, f.content_type.name)
        if f.content_type in (ContentType.PNG, ContentType.TIFF):
            # Decoded as the writer will (at most max_pixels, by the header, before
            # decoding): found only at wrapping, the mesh would reach the PACS naming
            # a texture that never follows.
            try:
                check_can_carry(fh, f.content_type, max_pixels)
            except CannotCarry as err:
                raise ExportRefused(f"a texture cannot be carried in DICOM: {err}") from err
    return ()


def _assign(
    manifest: Manifest,
    found: list[_Found],
    names: dict[str, tuple[str, ...]],
    by_rel: dict[str, _Found],
) -> ExportPlan:
    ordered = sorted(found, key=lambda f: (_OFFER_ORDER.index(_role(f)), f.rel))
    files = [
        ModelFile(
            key=f.rel,
            content_type=f.content_type,
            sha256=f.sha256,
            names=_named(f, names, by_rel),
        )
        for f in ordered
    ]
    dicom = plan_model_export(
        scanner_serial=manifest.scanner.serial,
        export_key=manifest.key,
        units=manifest.units,
        files=files,
    )
    planned = [
        PlannedFile(
            path=f.path,
            content_type=f.content_type,
            role=model.role,
            size=f.size,
            sha256=f.sha256,
            capture_id=f"{manifest.key[:16]}-{n:02d}-{f.sha256[:16]}",
            uids=model.uids,
            links=model.links,
        )
        for n, (f, model) in enumerate(zip(ordered, dicom, strict=True), start=1)
    ]
    scanner = manifest.scanner
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


def _named(
    source: _Found, names: dict[str, tuple[str, ...]], by_rel: dict[str, _Found]
) -> tuple[tuple[str, str], ...]:
    """The files ``source`` names, as (the string it uses, the file's path in the
    export); refuses the export when one is missing or of the wrong kind."""
    if source.content_type is ContentType.OBJ:
        wanted: tuple[ContentType, ...] = (ContentType.MTL,)
        what = "a material library the mesh names"
    elif source.content_type is ContentType.MTL:
        wanted = (ContentType.JPEG, ContentType.PNG, ContentType.TIFF)
        what = "a texture the material library names"
    else:
        return ()
    resolved = []
    for name in names[source.rel]:
        target_rel = _resolve(source.rel, name)
        target = by_rel.get(target_rel) if target_rel is not None else None
        if target is None or target.content_type not in wanted:
            raise ExportRefused(f"{what} is missing from the export")
        resolved.append((name, target.rel))
    return tuple(resolved)


def _role(f: _Found) -> ModelRole:
    role = model_role(f.content_type)
    assert role is not None  # every type of CONTENT_TYPES is a file of a 3D model
    return role


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


def _hash(entry: Path, rel: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with _open(entry, rel) as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
