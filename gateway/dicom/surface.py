"""Encapsulated OBJ (…104.4), MTL (…104.5) and STL (…104.3) Storage (PS3.3 A.85).

A 3D body scanner's export becomes one study: the mesh (OBJ or STL), its material
library (MTL) and the texture images (VL Photographic, built by
:mod:`gateway.dicom.photo`). :func:`write_encapsulated_3d` wraps one mesh or
material file, byte for byte, as the Encapsulated Document (0042,0011) of its
object. The driver tells the builder how the files of one export fit together
through :attr:`CaptureOffer.extra`, read here with :class:`ModelFileLinks`.

Modules written (PS3.3 A.85.1-3): Patient, General Study, Encapsulated Document
Series, Frame of Reference (OBJ and STL only: a material library has no geometry),
General and Enhanced General Equipment, Encapsulated Document, Manufacturing 3D
Model, SOP Common, and Common Instance Reference when the document names other
files. Decisions, with the rule behind each:

* **Streaming.** The document may be tens or hundreds of MB. The Part 10 writer
  (:func:`gateway.dicom.part10.write_part10`) writes the File Meta Information and
  every attribute that sorts before (0042,0011), then the Encapsulated Document
  element header (``OB`` with an explicit, even length), copies the file in 1 MiB
  chunks, pads an odd length with one 0x00, and appends the attributes after it
  (MIME type, Encapsulated Document Length). Memory stays flat. Encapsulated Document
  Length (0042,0015) is the length *before* padding, so a reader gets the file back
  exactly.
* **Links.** A document that names another file (``mtllib body.mtl`` in the OBJ,
  ``map_Kd skin.jpg`` in the MTL) gets a Referenced Instance Sequence (0008,114A)
  item per named file, with that file's SOP Class/Instance UIDs and, in Relative
  URI Reference Within Encapsulated Document (0068,7005), the exact string the
  document uses, so a viewer can resolve the name to an instance. The UIDs are
  chosen by the driver (derived from the export's content) before any file is
  received, so the order of arrival does not matter. Referencing other instances
  makes the Common Instance Reference Module required: its Referenced Series
  Sequence lists the same instances by series (all in this study).
* **Units.** Measurement Units Code Sequence (0040,08EA) is type 1; scanners export
  millimetres unless the manifest says otherwise; the UCUM code comes from the
  driver (``mm``, ``cm``, ``m``) and anything else is refused at the driver.
* **Frame of Reference.** Every mesh of one export shares one Frame of Reference
  UID (chosen by the driver), Position Reference Indicator empty (type 2: the
  scanner's coordinate origin is not a patient landmark DICOM names).
* **Recognizable Visual Features** is YES: a total-body surface includes the face.
  **Burned In Annotation** is NO: the document carries geometry, not text.
* **ICC Profile.** The OBJ and MTL IODs include the ICC Profile Module (the
  documents carry colour: material colours, texture coordinates). Scanner textures
  and MTL colours are sRGB by convention, so the module carries Pillow's sRGB
  profile with its creation date fixed (a re-wrap writes the same bytes) and Color
  Space SRGB. STL has no colour and no ICC Profile.
* **Instance/Series numbers** are type 1 in these IODs; they come from the links
  (mesh series 1, materials 2, textures 3), never guessed.
* **Session context** (:mod:`gateway.dicom.context`): patient, order and Request
  Attributes (Encapsulated Document Series); no Operators' Name, anatomy or
  tracking, which these IODs have no place for.
"""

from __future__ import annotations

import enum
import functools
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final
from urllib.parse import quote

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    EncapsulatedMTLStorage,
    EncapsulatedOBJStorage,
    EncapsulatedSTLStorage,
    ExplicitVRLittleEndian,
)

from gateway.core.capture import ContentType, PatientContext
from gateway.core.patient import object_patient
from gateway.dicom.context import apply_context
from gateway.dicom.errors import WrapError
from gateway.dicom.job import InlineStart, WrapJob, WrittenObject
from gateway.dicom.modules import (
    add_enhanced_general_equipment,
    da,
    dt,
    in_zone_of,
    new_instance,
    tm,
)
from gateway.dicom.part10 import StreamedValue, file_value, value_layout, write_part10

__all__ = [
    "MODALITY",
    "SOP_CLASS_FOR",
    "UNITS",
    "VL_PHOTOGRAPHIC_SOP_CLASS",
    "LinkedInstance",
    "ModelFileLinks",
    "ModelRole",
    "uri_reference",
    "write_encapsulated_3d",
]

#: Modality of the Encapsulated Document Series of 3D models.
MODALITY: Final = "M3D"
#: Where texture images go (JPEG, TIFF and PNG alike).
VL_PHOTOGRAPHIC_SOP_CLASS: Final = "1.2.840.10008.5.1.4.1.1.77.1.4"

SOP_CLASS_FOR: Final[dict[ContentType, str]] = {
    ContentType.OBJ: str(EncapsulatedOBJStorage),
    ContentType.MTL: str(EncapsulatedMTLStorage),
    ContentType.STL: str(EncapsulatedSTLStorage),
}

#: UCUM units a model may be in: code value → code meaning.
UNITS: Final[dict[str, str]] = {"mm": "millimeter", "cm": "centimeter", "m": "meter"}

_TITLES: Final[dict[ContentType, str]] = {
    ContentType.OBJ: "Total body surface mesh (OBJ)",
    ContentType.MTL: "Total body surface materials (MTL)",
    ContentType.STL: "Total body surface mesh (STL)",
}
_ENCAPSULATED_DOCUMENT: Final = 0x00420011
_MAX_LENGTH: Final = 0xFFFFFFFE
#: RFC 3986 path characters kept as they are (unreserved, sub-delims, ":@/").
_URI_SAFE: Final = "/-._~!$&'()*+,;=:@"


class ModelRole(enum.StrEnum):
    """What a file of a 3D export is; each role is one series of the study."""

    MESH = "mesh"
    MATERIAL = "material"
    TEXTURE = "texture"


@dataclass(frozen=True, slots=True)
class LinkedInstance:
    """Another file of the export that a document names, and its DICOM identity."""

    uri: str
    sop_class_uid: str
    series_uid: str
    sop_instance_uid: str

    def to_json(self) -> dict[str, str]:
        """JSON-compatible form, for :attr:`CaptureOffer.extra`."""
        return {
            "uri": self.uri,
            "sop_class_uid": self.sop_class_uid,
            "series_uid": self.series_uid,
            "sop_instance_uid": self.sop_instance_uid,
        }


@dataclass(frozen=True, slots=True)
class ModelFileLinks:
    """The ``offer.extra`` of one file of a 3D scanner export (driver → builders).

    Keys (JSON): ``role`` (mesh, material, texture), ``series_number`` and
    ``instance_number`` (also read by the VL Photographic builder for textures),
    ``references`` (the files this one names, with the string it uses),
    ``frame_of_reference_uid`` (meshes), ``units`` (UCUM code of the mesh
    coordinates) and ``export_key`` (content hash of the export's manifest; groups
    the files of one export without naming it).
    """

    role: ModelRole
    series_number: int
    instance_number: int
    export_key: str
    references: tuple[LinkedInstance, ...] = ()
    frame_of_reference_uid: str = ""
    units: str = "mm"

    def to_extra(self) -> dict[str, Any]:
        """The ``offer.extra`` dictionary."""
        return {
            "role": self.role.value,
            "series_number": self.series_number,
            "instance_number": self.instance_number,
            "export_key": self.export_key,
            "references": [ref.to_json() for ref in self.references],
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "units": self.units,
        }

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> ModelFileLinks:
        """Read ``offer.extra`` back; raises :class:`WrapError` when it is not one."""
        try:
            refs = tuple(
                LinkedInstance(
                    uri=str(r["uri"]),
                    sop_class_uid=str(r["sop_class_uid"]),
                    series_uid=str(r["series_uid"]),
                    sop_instance_uid=str(r["sop_instance_uid"]),
                )
                for r in extra.get("references", [])
            )
            links = cls(
                role=ModelRole(extra["role"]),
                series_number=int(extra["series_number"]),
                instance_number=int(extra["instance_number"]),
                export_key=str(extra.get("export_key", "")),
                references=refs,
                frame_of_reference_uid=str(extra.get("frame_of_reference_uid", "")),
                units=str(extra.get("units", "mm")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise WrapError(
                "the 3D model capture lacks its export links (driver bug); "
                "the capture is kept and quarantined"
            ) from err
        if links.units not in UNITS:
            raise WrapError(f"unknown model unit {links.units[:16]!r}; the capture is quarantined")
        return links


def write_encapsulated_3d(job: WrapJob, dest: Path) -> WrittenObject:
    """Write one OBJ, MTL or STL file as an encapsulated 3D model document.

    Streams the capture from ``job.source`` into ``dest`` (atomically). Raises
    :class:`WrapError` for an empty or oversized file or missing links, and
    :class:`OSError` when the source changes while it is copied.
    """
    content_type = job.offer.content_type
    sop_class = SOP_CLASS_FOR.get(content_type)
    if sop_class is None:
        raise WrapError(f"{content_type} is not a 3D model document")
    links = ModelFileLinks.from_extra(job.offer.extra)
    with job.source.open("rb") as src:
        size = os.fstat(src.fileno()).st_size
        if size == 0:
            raise WrapError("the 3D model file is empty; the capture is quarantined")
        if size + (size & 1) > _MAX_LENGTH:
            raise WrapError("the 3D model file exceeds the 4 GiB a DICOM element can hold")
        dataset = build_encapsulated_3d(job, links, sop_class, size)

        def changed(copied: int) -> OSError:
            return OSError(f"the model file changed size while being copied ({copied}/{size})")

        document = file_value(src, size, tag=_ENCAPSULATED_DOCUMENT, mismatch=changed)
        write_part10(dest, dataset, document)
    return WrittenObject(sop_class_uid=sop_class, transfer_syntax_uid=str(ExplicitVRLittleEndian))


def begin_encapsulated_3d(job: WrapJob) -> InlineStart:
    """The start and end of the file of a model whose ``job.offer.length`` bytes are
    still arriving (intake writes them in between, once; blocking).

    Everything in this object's header is known when the capture starts: the
    links and units (the driver's offer), the length (announced). The bytes are
    those :func:`write_encapsulated_3d` writes. Raises :class:`WrapError` like it
    (the capture is then kept raw and quarantined by the wrapping stage).
    """
    content_type = job.offer.content_type
    sop_class = SOP_CLASS_FOR.get(content_type)
    size = job.offer.length
    if sop_class is None or size is None:
        raise WrapError(f"{content_type} is not a 3D model document of a known length")
    if size == 0:
        raise WrapError("the 3D model file is empty; the capture is quarantined")
    if size + (size & 1) > _MAX_LENGTH:
        raise WrapError("the 3D model file exceeds the 4 GiB a DICOM element can hold")
    links = ModelFileLinks.from_extra(job.offer.extra)
    dataset = build_encapsulated_3d(job, links, sop_class, size)
    document = StreamedValue(length=size, copy=_no_copy, tag=_ENCAPSULATED_DOCUMENT)
    before, after = value_layout(dataset, document)
    return InlineStart(
        start=before,
        end=after,
        sop_class_uid=sop_class,
        transfer_syntax_uid=str(ExplicitVRLittleEndian),
        data_offset=len(before),
    )


def _no_copy(out: BinaryIO) -> int:
    raise AssertionError("written by intake")  # pragma: no cover


def build_encapsulated_3d(
    job: WrapJob, links: ModelFileLinks, sop_class: str, document_length: int
) -> Dataset:
    """The dataset of one encapsulated model, without the Encapsulated Document (pure)."""
    offer, uids, now = job.offer, job.uids, job.now
    content_type = offer.content_type
    acquired = in_zone_of(offer.acquired_at or now, now)
    patient: PatientContext = object_patient(
        offer.patient, job.gateway.gateway_id, job.patient_spool_id
    ).context

    # General Series is the Encapsulated Document Series (Series Number is type 1 here)
    ds = new_instance(
        sop_class_uid=sop_class,
        uids=uids,
        modality=MODALITY,
        patient=patient,
        acquired=acquired,
        now=now,
        series_number=links.series_number,
    )

    if content_type is not ContentType.MTL:
        if not links.frame_of_reference_uid:
            raise WrapError("the mesh lacks its frame of reference (driver bug); quarantined")
        ds.FrameOfReferenceUID = links.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""

    add_enhanced_general_equipment(ds, job.identity, job.gateway, now=job.now)

    # Encapsulated Document
    ds.InstanceNumber = links.instance_number
    ds.ContentDate = da(acquired)
    ds.ContentTime = tm(acquired)
    ds.AcquisitionDateTime = dt(acquired)
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "YES"
    ds.DocumentTitle = _TITLES[content_type]
    ds.ConceptNameCodeSequence = Sequence()
    ds.MIMETypeOfEncapsulatedDocument = str(content_type)
    ds.EncapsulatedDocumentLength = document_length

    # Manufacturing 3D Model
    unit = Dataset()
    unit.CodeValue = links.units
    unit.CodingSchemeDesignator = "UCUM"
    unit.CodeMeaning = UNITS[links.units]
    ds.MeasurementUnitsCodeSequence = Sequence([unit])

    if content_type is not ContentType.STL:
        ds.ICCProfile = srgb_icc_profile()
        ds.ColorSpace = "SRGB"

    if links.references:
        _add_references(ds, links.references)
    if job.context is not None:
        apply_context(ds, job.context, offer)
    return ds


@functools.cache
def srgb_icc_profile() -> bytes:
    """An sRGB ICC profile, identical in every run (creation date fixed)."""
    from PIL import ImageCms  # only when a texture is written

    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    # Header bytes 24-35: creation date/time (six uint16). Profile ID (84-99) is zero
    # in Pillow's profiles, so nothing else depends on the date.
    profile[24:36] = struct.pack(">6H", 2026, 1, 1, 0, 0, 0)
    if len(profile) & 1:
        profile.append(0)
    return bytes(profile)


def _add_references(ds: Dataset, references: tuple[LinkedInstance, ...]) -> None:
    """Referenced Instance Sequence with URIs, and the Common Instance Reference Module."""
    items = []
    for ref in references:
        item = Dataset()
        item.ReferencedSOPClassUID = ref.sop_class_uid
        item.ReferencedSOPInstanceUID = ref.sop_instance_uid
        item.RelativeURIReferenceWithinEncapsulatedDocument = uri_reference(ref.uri)
        items.append(item)
    ds.ReferencedInstanceSequence = Sequence(items)

    by_series: dict[str, list[LinkedInstance]] = {}
    for ref in references:
        by_series.setdefault(ref.series_uid, []).append(ref)
    series_items = []
    for series_uid, refs in by_series.items():
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        instances = []
        for ref in refs:
            instance = Dataset()
            instance.ReferencedSOPClassUID = ref.sop_class_uid
            instance.ReferencedSOPInstanceUID = ref.sop_instance_uid
            instances.append(instance)
        series.ReferencedInstanceSequence = Sequence(instances)
        series_items.append(series)
    ds.ReferencedSeriesSequence = Sequence(series_items)


def uri_reference(name: str) -> str:
    """A file name as used in a document, as a relative URI reference (UR VR)."""
    return quote(name, safe=_URI_SAFE)
