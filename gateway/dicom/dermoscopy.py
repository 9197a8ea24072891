"""Dermoscopic Photography Image Storage (PS3.3 A.32.11, C.8.12.13; Sup 221).

:func:`build_dermoscopic_photography` turns one dermatoscope capture into a DICOM
dataset *without* Pixel Data, starting from the common modules
(:func:`gateway.dicom.modules.new_instance`);
:func:`gateway.dicom.part10.write_part10_encapsulated` appends the device's JPEG,
its image data unchanged and its metadata segments dropped
(:mod:`gateway.dicom.jpeg`), while streaming the file out. The
builder is pure: no I/O, no clock reads, no random UIDs (the Frame of Reference UID
is derived from the SOP Instance UID), inputs are not modified, and the same inputs
give an equal dataset, so a re-wrap after a crash produces the same object.

Decisions, with the rule behind each:

* **Immersion Media** (0016,1004) is type 2C, required when Contact Method is
  CONTACT and not allowed otherwise. CONTACT with a known medium writes it; CONTACT
  with an unknown medium writes it empty. A medium reported together with
  NON_CONTACT, or without any contact method, is a contradiction that only the
  device or its driver can resolve: the builder raises :class:`InconsistentSettings`
  (capture kept and quarantined, reason shown) instead of silently dropping or
  guessing one of the two values, so a buggy driver is noticed at its first capture.
* **Recognizable Visual Features** (0028,0302) is type 1 and says whether the image
  could identify the patient. Dermoscopy is usually a close-up of a few millimetres
  of skin, but non-contact dermatoscopes frame wider (face, tattoos, birthmarks) and
  the gateway never looks at the pixels, so it cannot vouch for NO. It writes YES,
  the safe value: de-identification and research export then treat the image as
  identifying instead of trusting a guess.
* **Laterality**: when the device names a side, Image Laterality (0020,0062) carries
  it (R, L, U or B) and a CID 244 modifier is added to the anatomic site. Without
  it, Series Laterality (0020,0060), type 2C, is written empty: it is required
  when Image Laterality is absent and empty is its conformant "unknown".
* **Frame of Reference**: the 2022 tables require the module and the 2024 ones do
  not; a Frame of Reference UID with an empty Position Reference Indicator
  satisfies both.
* **Anatomic site**: only a SNOMED CT code in CID 4029 is written, with its meaning
  from the standard's table; an unknown code is left out rather than invented.
* **Patient**: the device's when it named a Patient ID, else a temporary patient
  ``TMP-<gateway id>-<spool id>`` (:mod:`gateway.core.patient`), so a PACS never
  files different people's images under one blank patient.
* **Lesion tracking**: when the device gives a lesion id for a known patient,
  Tracking ID is that id and Tracking UID is derived from the issuer, patient id and
  lesion id, so the same lesion keeps its Tracking UID across visits and devices.
  For a temporary patient both are left out (type 1C; a UID that may merge two
  people's lesions is worse than none) and the label goes into Image Comments.
* **Session context**: a capture bound to a patient session is written with its
  context (:mod:`gateway.dicom.context`, docs/dicom/context.md): patient and order
  from the session, Tracking ID/UID from the lesion registry (replacing the derived
  UID and the comment above), the lesion's site and side overriding the device's.
"""

from __future__ import annotations

import enum
from dataclasses import replace
from datetime import datetime
from typing import Final, TypeVar

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import DermoscopicPhotographyImageStorage
from pydicom.valuerep import format_number_as_ds

from gateway.core.capture import (
    CaptureOffer,
    ContactMethod,
    DermoscopySettings,
    DeviceIdentity,
    GatewayIdentity,
    ImmersionMedium,
    InstanceUIDs,
    Laterality,
    PatientContext,
    Polarization,
)
from gateway.core.context import CaptureContext
from gateway.core.patient import ObjectPatient, lesion_label_comment, object_patient
from gateway.core.uids import (
    derived_uid,
    tracking_uid,
)
from gateway.dicom.context import apply_context
from gateway.dicom.errors import InconsistentSettings
from gateway.dicom.jpeg import JpegInfo, encapsulation_for
from gateway.dicom.modules import (
    add_anatomic_region,
    add_enhanced_general_equipment,
    da,
    dt,
    in_zone_of,
    new_instance,
    tm,
)

__all__ = ["DERMOSCOPIC_PHOTOGRAPHY_SOP_CLASS", "MODALITY", "build_dermoscopic_photography"]

#: Dermoscopic Photography Image Storage.
DERMOSCOPIC_PHOTOGRAPHY_SOP_CLASS: Final = str(DermoscopicPhotographyImageStorage)
#: Modality for dermoscopy (XC is an error for this IOD).
MODALITY: Final = "DMS"

_E = TypeVar("_E", bound=enum.Enum)


def build_dermoscopic_photography(
    *,
    identity: DeviceIdentity,
    offer: CaptureOffer,
    uids: InstanceUIDs,
    jpeg: JpegInfo,
    gateway: GatewayIdentity,
    patient: PatientContext | None,
    now: datetime,
    series_number: int | None = None,
    instance_number: int | None = None,
    patient_spool_id: int | None = None,
    context: CaptureContext | None = None,
) -> Dataset:
    """Build the Dermoscopic Photography dataset of one capture, without Pixel Data.

    ``patient_spool_id`` names the temporary patient when ``patient`` has no
    Patient ID (see :mod:`gateway.core.patient`). ``context`` is the capture's
    patient/order/lesion context (:func:`gateway.dicom.context.apply_context`).

    ``now`` (timezone-aware) is the wrap time: Instance Creation Date/Time, and the
    acquisition time when the device gave none. Raises a
    :class:`~gateway.dicom.errors.WrapError` subclass, whose message is the
    quarantine reason, when the JPEG cannot be carried as-is, the device settings
    contradict each other, or the device identity is incomplete.

    Series Number and Instance Number are type 2 and written empty unless the
    caller, which knows how captures are grouped into series, passes them.
    """
    offer = _coerce(offer)
    _check_settings(offer.settings)
    encapsulation = encapsulation_for(jpeg)
    acquired = in_zone_of(offer.acquired_at or now, now)

    subject = object_patient(patient, gateway.gateway_id, patient_spool_id)
    ds = new_instance(
        sop_class_uid=DERMOSCOPIC_PHOTOGRAPHY_SOP_CLASS,
        uids=uids,
        modality=MODALITY,
        patient=subject.context,
        acquired=acquired,
        now=now,
        series_number=series_number,
        transfer_syntax_uid=encapsulation.transfer_syntax_uid,
    )
    if offer.laterality is None:
        ds.Laterality = ""  # Series Laterality (0020,0060)

    # Frame of Reference
    ds.FrameOfReferenceUID = derived_uid("frame-of-reference", uids.sop_instance)
    ds.PositionReferenceIndicator = ""

    add_enhanced_general_equipment(ds, identity, gateway, now=now)

    # General Image, VL Image, Image Pixel (Pixel Data comes from part10.py)
    ds.InstanceNumber = instance_number
    ds.PatientOrientation = ""
    ds.ContentDate = da(acquired)
    ds.ContentTime = tm(acquired)
    ds.AcquisitionDateTime = dt(acquired)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    if offer.laterality is not None:
        ds.ImageLaterality = offer.laterality.value
    add_anatomic_region(ds, offer.anatomic_site, offer.laterality)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = encapsulation.photometric_interpretation
    ds.PlanarConfiguration = 0
    ds.Rows = jpeg.rows
    ds.Columns = jpeg.columns
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    if jpeg.encapsulated_size > 0:
        # Uncompressed size (3 samples of 8 bits) over the JPEG as encapsulated.
        ratio = jpeg.rows * jpeg.columns * 3 / jpeg.encapsulated_size
        ds.LossyImageCompressionRatio = format_number_as_ds(round(ratio, 2))

    # Acquisition Context: present, nothing to say yet
    ds.AcquisitionContextSequence = Sequence()

    _add_dermoscopic_image(ds, offer, subject)
    if context is not None:
        apply_context(ds, context, offer)
    return ds


def _coerce(offer: CaptureOffer) -> CaptureOffer:
    """The offer with every coded setting as its enum; an unknown term is refused."""
    settings = offer.settings
    try:
        return replace(
            offer,
            laterality=_enum(Laterality, offer.laterality),
            settings=replace(
                settings,
                polarization=_enum(Polarization, settings.polarization),
                contact=_enum(ContactMethod, settings.contact),
                immersion=_enum(ImmersionMedium, settings.immersion),
            ),
        )
    except ValueError as err:
        raise InconsistentSettings(
            f"the device reported a setting DICOM does not define ({err}); check the "
            "device driver; the capture is kept and quarantined"
        ) from err


def _enum(kind: type[_E], value: object) -> _E | None:
    return None if value is None else kind(value)


def _check_settings(settings: DermoscopySettings) -> None:
    """Refuse contradictory optics before anything is written."""
    if settings.immersion is not None and settings.contact is not ContactMethod.CONTACT:
        said = (
            "a non-contact acquisition"
            if settings.contact is ContactMethod.NON_CONTACT
            else "no contact method"
        )
        raise InconsistentSettings(
            f"the device reported immersion medium {settings.immersion.value} together "
            f"with {said}; an immersion medium is only used with contact dermoscopy, so "
            "the device or its driver reports wrong settings; the capture is kept and "
            "quarantined"
        )


def _add_dermoscopic_image(ds: Dataset, offer: CaptureOffer, subject: ObjectPatient) -> None:
    """Dermoscopic Image Module: optics from the device, lesion tracking."""
    settings = offer.settings
    ds.RecognizableVisualFeatures = "YES"
    ds.LightSourcePolarization = settings.polarization.value if settings.polarization else ""
    ds.EmitterColorTemperature = (
        str(settings.color_temperature_k) if settings.color_temperature_k is not None else ""
    )
    ds.ContactMethod = settings.contact.value if settings.contact else ""
    if settings.contact is ContactMethod.CONTACT:
        ds.ImmersionMedia = settings.immersion.value if settings.immersion else ""
    ds.OpticalMagnificationFactor = (
        format_number_as_ds(settings.magnification) if settings.magnification is not None else ""
    )
    if offer.lesion_id and subject.known:
        patient = subject.context
        ds.TrackingID = offer.lesion_id
        ds.TrackingUID = tracking_uid(
            patient.issuer_of_patient_id, patient.patient_id, offer.lesion_id
        )
    elif offer.lesion_id:
        ds.ImageComments = lesion_label_comment(offer.lesion_id)
