"""Capture contexts (worklist-style and unscheduled) and one wrap job per IOD DermGate writes.

``KINDS`` names every object family: dermoscopy JPEG, VL Photographic JPEG and PNG,
confocal z-stack and mosaic (8-bit), 16-bit confocal (Word SC), encapsulated OBJ,
MTL and STL. ``job_for_kind`` makes that capture's wrap job, with or without a
context, the way the wrapping stage does (``offer.patient`` is the context's patient).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Final

from gateway.core.capture import ContentType, InstanceUIDs, Laterality, PatientContext
from gateway.core.context import (
    CaptureContext,
    Coded,
    LesionContext,
    OrderContext,
    RequestedProcedure,
    SessionSource,
)
from gateway.core.uids import new_uid
from gateway.dicom.job import WrapJob
from gateway.dicom.surface import ModelRole
from tests.support import confocal_stacks as cs
from tests.support import dermoscopy_capture as dc
from tests.support import photo_capture as pc
from tests.support import surface_capture as sc

KINDS: Final = ("dermoscopy", "photo", "png", "z-stack", "mosaic", "sc16", "obj", "mtl", "stl")
#: Kinds whose IOD has Tracking ID / UID.
TRACKING_KINDS: Final = frozenset({"dermoscopy", "z-stack", "mosaic"})
#: Kinds with the Confocal Microscopy IODs (Frame Anatomy, no dciodvfy checker).
CONFOCAL_KINDS: Final = frozenset({"z-stack", "mosaic"})
#: Encapsulated documents: no anatomy, no Operators' Name.
DOCUMENT_KINDS: Final = frozenset({"obj", "mtl", "stl"})

STUDY_UID: Final = "1.2.826.0.1.3680043.8.498.10001"
PATIENT: Final = PatientContext(
    patient_name="Müller-Ødegård^Jürgen",
    patient_id="PID0042",
    issuer_of_patient_id="HOSP-A",
    birth_date="19700102",
    sex="M",
)
PROCEDURE: Final = Coded("DERM01", "99DERMGATE", "Dermoscopy of skin lesions")
PROTOCOL: Final = Coded("PROT-POL", "99DERMGATE", "Polarized contact dermoscopy")
#: A code longer than Code Value's 16 characters (goes to Long Code Value).
LONG_PROTOCOL: Final = Coded("PROTOCOL-RCM-ZSTACK-0001", "99DERMGATE", "Confocal z-stack")
REQUEST: Final = RequestedProcedure(
    requested_procedure_id="RP0001",
    accession_number="ACC0001",
    study_uid=STUDY_UID,
    requested_procedure_description="Dermoscopy follow-up",
    requested_procedure_codes=(PROCEDURE,),
    sps_id="SPS0001",
    sps_description="Dermoscopy, left forearm",
    protocol_codes=(PROTOCOL, LONG_PROTOCOL),
)
ORDER: Final = OrderContext(
    accession_number="ACC0001",
    referring_physician="Weiß^Anna",
    study_id="RP0001",
    referenced_study_uids=(STUDY_UID,),
    procedure_codes=(PROCEDURE,),
    request=REQUEST,
)
#: Skin of anterior surface of forearm (CID 4029), on the right: not the device's site.
LESION: Final = LesionContext(
    tracking_id="L03",
    tracking_uid="2.25.271828182845904523536028747135266249",
    site="70559009",
    laterality=Laterality.RIGHT,
    description="pigmented lesion",
)
SENSITIVE: Final = (Coded("SENS-GEN", "99DERMGATE", "Genital region image"),)
CONTEXT: Final = CaptureContext(
    session_id=7,
    source=SessionSource.WORKLIST,
    patient=PATIENT,
    study_uid=STUDY_UID,
    study_description="Dermoscopy follow-up",
    order=ORDER,
    series_description="Dermatoscope, skin of forearm, lesion L03",
    operator_name="Šimić^Tina",
    lesion=LESION,
    sensitive=SENSITIVE,
)
#: The IHE unscheduled case: typed demographics, no order, a study minted for the session.
UNSCHEDULED: Final = CaptureContext(
    session_id=8,
    source=SessionSource.MANUAL,
    patient=PatientContext("Doe^Jane", "PID0099", "HOSP-A", "19851224", "F"),
    study_uid="2.25.99001",
    study_description="Dermatology",
    series_description="Dermatoscope",
)


def _surface_job(tmp_path: Path, content_type: ContentType) -> WrapJob:
    if content_type is ContentType.OBJ:
        links = sc.surface_links(ModelRole.MESH, (sc.MTL_LINK,))
        data = b"mtllib body%20file.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"
    elif content_type is ContentType.MTL:
        links = sc.surface_links(ModelRole.MATERIAL, (sc.TEXTURE_LINK,))
        data = b"newmtl skin\nmap_Kd skin.jpg\n"
    else:
        links = sc.surface_links(ModelRole.MESH)
        data = b"solid s\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 1 0 0\n"
        data += b"vertex 0 1 0\nendloop\nendfacet\nendsolid s\n"
    return sc.surface_job(tmp_path, content_type, data, links)


def base_job(kind: str, tmp_path: Path) -> WrapJob:
    """The capture of ``kind`` as its driver offers it (no context, temporary patient)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    if kind == "dermoscopy":
        source = dc.make_jpeg(tmp_path / "lesion.jpg")
        return WrapJob(dc.IDENTITY, dc.OFFER, dc.UIDS, source, dc.GATEWAY, dc.NOW, 11)
    if kind == "photo":
        source = pc.make_jpeg(tmp_path / "photo.jpg")
        return WrapJob(pc.CAMERA, pc.photo_offer(), pc.uids(), source, pc.GATEWAY, pc.NOW, 12)
    if kind == "png":
        source = tmp_path / "texture.png"
        pc.pattern_image("RGB").save(source)
        return replace(pc.native_job(source, ContentType.PNG), patient_spool_id=13)
    if kind in ("z-stack", "mosaic", "sc16"):
        stack = cs.make_stack(
            "z-stack" if kind == "sc16" else kind, bits=16 if kind == "sc16" else 8
        )
        job = cs.job_for(
            tmp_path,
            stack,
            cs.frames_of(stack),
            anatomic_site=dc.SKIN_OF_OCCIPITAL_REGION,
            laterality=Laterality.LEFT,
            lesion_id="L-07",
        )
        return replace(job, now=dc.NOW, patient_spool_id=14)
    content_type = {"obj": ContentType.OBJ, "mtl": ContentType.MTL, "stl": ContentType.STL}[kind]
    return _surface_job(tmp_path, content_type)


def with_context(job: WrapJob, context: CaptureContext, *, series: str | None = None) -> WrapJob:
    """``job`` bound to ``context`` as the wrapping stage does it: the context's patient
    as ``offer.patient``, the context's study, a session series (same SOP Instance UID)."""
    uids = InstanceUIDs(context.study_uid, series or new_uid(), job.uids.sop_instance)
    return replace(
        job, offer=replace(job.offer, patient=context.patient), uids=uids, context=context
    )
