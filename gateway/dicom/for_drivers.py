"""What a device driver may know of DICOM, and nothing more.

Drivers reach this module only through :mod:`gateway.driver_api`. It offers three
things, so that a driver never picks a SOP class, derives a UID or reads a
builder's error text, and ``gateway.dicom`` stays the only place that does:

* **The typed ``offer.extra``** of each kind of capture: :class:`PhotoExtra` with
  :class:`ExifFields` (a camera photo, a scanner texture), :class:`ConfocalStack`
  with :class:`RowMajorTiles` (a confocal z-stack or mosaic), :class:`ModelFileLinks`
  (a file of a 3D export); and the limits a driver's options are bounded by
  (:data:`DEFAULT_MAX_PIXELS`, :data:`MAX_NATIVE_PIXELS`, :data:`MAX_FRAMES`).
* **One check, "can DICOM carry this file"**: :func:`check_can_carry` looks at an
  image the way the builder will (a JPEG is carried as it came, so its header must
  be one DICOM can describe; a TIFF or PNG is decoded, so it must decode losslessly
  within ``max_pixels``) and raises :class:`CannotCarry` with the reason in plain
  words, so a driver can refuse a file before it acknowledges anything.
* **The plan of a 3D export** (:func:`plan_model_export`): given the export's files
  in the order they will be offered and which file names which, the UIDs of every
  object (derived from the scanner, the export and the content, so that files can
  name each other before any is received and a re-offer gives the same objects) and
  the links each one carries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, Final

from gateway.core.capture import ContentType, InstanceUIDs
from gateway.core.uids import derived_uid
from gateway.dicom.confocal import MAX_FRAMES, ConfocalStack, RowMajorTiles
from gateway.dicom.errors import WrapError
from gateway.dicom.jpeg import encapsulation_for, read_jpeg_info_from
from gateway.dicom.photo import (
    DEFAULT_MAX_PIXELS,
    MAX_NATIVE_PIXELS,
    ExifFields,
    PhotoExtra,
    check_native_image,
)
from gateway.dicom.surface import (
    SOP_CLASS_FOR,
    VL_PHOTOGRAPHIC_SOP_CLASS,
    LinkedInstance,
    ModelFileLinks,
    ModelRole,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_FRAMES",
    "MAX_NATIVE_PIXELS",
    "CannotCarry",
    "ConfocalStack",
    "ExifFields",
    "LinkedInstance",
    "ModelFile",
    "ModelFileLinks",
    "ModelRole",
    "PhotoExtra",
    "PlannedModelFile",
    "RowMajorTiles",
    "UnreadableImage",
    "check_can_carry",
    "model_role",
    "plan_model_export",
]

#: How a builder's quarantine reason ends; cut off, since a refused file is not kept.
_QUARANTINE_TAILS: Final = (
    ", so the capture is kept and quarantined",
    "; the capture is kept and quarantined",
)
_ROLES: Final[dict[ContentType, ModelRole]] = {
    ContentType.OBJ: ModelRole.MESH,
    ContentType.STL: ModelRole.MESH,
    ContentType.MTL: ModelRole.MATERIAL,
    ContentType.JPEG: ModelRole.TEXTURE,
    ContentType.PNG: ModelRole.TEXTURE,
    ContentType.TIFF: ModelRole.TEXTURE,
}
#: Each role of a 3D export is one series of its study, numbered so.
_SERIES_NUMBER: Final[dict[ModelRole, int]] = {
    ModelRole.MESH: 1,
    ModelRole.MATERIAL: 2,
    ModelRole.TEXTURE: 3,
}


# --- can DICOM carry this file -----------------------------------------------------


class CannotCarry(Exception):
    """DICOM cannot carry the file as DermGate would; ``str(err)`` is the reason.

    The reason is in plain words, without file names or patient data, and without
    the builder's "the capture is kept and quarantined" (a driver refuses the file
    instead of keeping it).
    """

    @property
    def truncated(self) -> bool:
        """The file ends too early (a copy still in progress looks the same)."""
        return "truncated" in str(self)


class UnreadableImage(CannotCarry):
    """The image's header cannot be read as the kind it claims to be (damaged, or
    another kind of file); any other :class:`CannotCarry` is a readable image that
    DICOM cannot carry as it is."""


def _plain(err: WrapError) -> str:
    text = str(err)
    for tail in _QUARANTINE_TAILS:
        text = text.replace(tail, "")
    return text


def check_can_carry(
    source: BinaryIO, content_type: ContentType, max_pixels: int = DEFAULT_MAX_PIXELS
) -> None:
    """Check that DICOM can carry the image in ``source`` (read from its start); blocking.

    A JPEG's header must describe an image the VL rules carry unchanged (4:2:0 or
    4:2:2, baseline or extended: never transcoded); a TIFF or PNG is decoded once, as
    the builder will, and must be at most ``max_pixels`` by its header (checked
    before decoding) and carried without loss. Raises :class:`UnreadableImage` for a
    JPEG whose header cannot be read, :class:`CannotCarry` for any other refusal,
    :class:`OSError` when reading fails.
    """
    content = ContentType(content_type)
    source.seek(0)
    if content is ContentType.JPEG:
        try:
            info = read_jpeg_info_from(source)
        except WrapError as err:
            raise UnreadableImage(_plain(err)) from err
        try:
            encapsulation_for(info)
        except WrapError as err:
            raise CannotCarry(_plain(err)) from err
        return
    if content in (ContentType.TIFF, ContentType.PNG):
        try:
            check_native_image(source, content, max_pixels)
        except WrapError as err:
            raise CannotCarry(_plain(err)) from err
        return
    raise CannotCarry(f"{content.value} is not an image DermGate carries as a photo")


# --- the plan of a 3D export -------------------------------------------------------


def model_role(content_type: ContentType) -> ModelRole | None:
    """What a file of a 3D export is (mesh, material, texture); None: not one."""
    return _ROLES.get(ContentType(content_type))


@dataclass(frozen=True, slots=True)
class ModelFile:
    """One file of a 3D export, as the driver found and checked it.

    ``key`` is the driver's own name for the file (a path within the export); it
    only links files together and is never written to DICOM. ``names`` lists the
    files this one names (an OBJ's ``mtllib``, an MTL's textures), each as the
    exact string the file uses and the ``key`` of the file it resolves to.
    """

    key: str
    content_type: ContentType
    sha256: str
    names: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class PlannedModelFile:
    """A file of a 3D export with the UIDs and links its DICOM object will carry."""

    file: ModelFile
    role: ModelRole
    uids: InstanceUIDs
    links: ModelFileLinks


def plan_model_export(
    *, scanner_serial: str, export_key: str, units: str, files: Sequence[ModelFile]
) -> tuple[PlannedModelFile, ...]:
    """The UIDs and links of every file of one 3D export (pure; same input, same plan).

    ``files`` come in the order they will be offered; the plan keeps it. The Study
    UID is derived from ``scanner_serial`` and ``export_key`` (a content hash of the
    export, never a name), a Series per role from the study, each SOP Instance from
    the study, the file's position and its SHA-256, and one Frame of Reference shared
    by the meshes. Instance numbers count within a role, in offer order. Raises
    ValueError for a file that is not part of a 3D model, or a name that resolves to
    no file of ``files`` (the driver checks both first).
    """
    study = derived_uid("scanner-export-study", f"{scanner_serial}\x00{export_key}")
    frame = derived_uid("scanner-export-frame-of-reference", study)
    series = {role: derived_uid(f"scanner-export-series-{role.value}", study) for role in ModelRole}
    roles: dict[str, ModelRole] = {}
    uids: dict[str, InstanceUIDs] = {}
    numbers: dict[ModelRole, int] = {}
    position: dict[str, int] = {}
    by_key: dict[str, ModelFile] = {}
    for n, f in enumerate(files, start=1):
        role = model_role(f.content_type)
        if role is None:
            raise ValueError(f"{f.content_type} is not a file of a 3D model")
        roles[f.key] = role
        by_key[f.key] = f
        numbers[role] = numbers.get(role, 0) + 1
        position[f.key] = numbers[role]
        uids[f.key] = InstanceUIDs(
            study=study,
            series=series[role],
            sop_instance=derived_uid(f"scanner-export-instance-{n}-{f.sha256}", study),
        )
    planned = []
    for f in files:
        role = roles[f.key]
        references = []
        for uri, target_key in f.names:
            target = by_key.get(target_key)
            if target is None:
                raise ValueError("a file names a file that is not part of the export")
            references.append(
                LinkedInstance(
                    uri=uri,
                    sop_class_uid=SOP_CLASS_FOR.get(target.content_type, VL_PHOTOGRAPHIC_SOP_CLASS),
                    series_uid=uids[target_key].series,
                    sop_instance_uid=uids[target_key].sop_instance,
                )
            )
        links = ModelFileLinks(
            role=role,
            series_number=_SERIES_NUMBER[role],
            instance_number=position[f.key],
            export_key=export_key,
            references=tuple(references),
            frame_of_reference_uid=frame if role is ModelRole.MESH else "",
            units=units,
        )
        planned.append(PlannedModelFile(file=f, role=role, uids=uids[f.key], links=links))
    return tuple(planned)
