"""Rewrite a written DICOM object with another capture context (same instance).

Used when a capture that has not been sent yet must belong to another session: a
held capture assigned to a patient, or a session opened by mistake. Intake may have
written a JPEG straight into its DICOM file (the device's bytes are written once and
the raw capture is not kept), and a confocal object can be a gigabyte, so the object
is rewritten from its own file rather than rebuilt from the capture:

1. the header is read with pydicom up to the first bulk element — the Encapsulated
   Document (0042,0011) of a 3D model, a z-stack's Per-Frame Functional Groups
   Sequence (5200,9230), or Pixel Data (7FE0,0010) — which stays unparsed;
2. the Study and Series Instance UIDs become the job's, and the job's context is
   applied with :func:`gateway.dicom.context.apply_context`, which sets or removes
   every attribute a context owns (so the previous context leaves nothing behind);
3. the new header is written, then every byte from the bulk element to the end of
   the file is copied as it is, in 1 MiB chunks, through
   :func:`gateway.core.files.atomic_writer` (``dest`` may be ``source``; it changes
   only once the new file is complete and durable).

The SOP Instance UID, the pixel data or document, and everything the context does
not own (equipment, acquisition times, optics, Instance Creation Date/Time) stay as
they were: the result is the object the wrapping stage would have written with the
new context. Only DermGate's own objects (its SOP classes, explicit VR little
endian, the job's SOP Instance UID) are accepted. Blocking; memory does not grow
with the size of the pixel data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial
from pydicom.tag import BaseTag
from pydicom.uid import UID

from gateway.core.context import CaptureContext
from gateway.core.files import atomic_writer, copy_stream
from gateway.dicom.context import CONTEXT_SOP_CLASSES, apply_context
from gateway.dicom.job import WrapJob, WrittenObject
from gateway.dicom.part10 import PIXEL_DATA, encode_header

__all__ = ["BULK_TAGS", "retarget"]

#: Where the unparsed, copied part of a DermGate object begins.
BULK_TAGS: Final = frozenset({0x00420011, 0x52009230, PIXEL_DATA})
_CHUNK: Final = 1 << 20


def _at_bulk(tag: BaseTag, _vr: str | None, _length: int) -> bool:
    return int(tag) in BULK_TAGS


def retarget(
    source: Path, dest: Path, job: WrapJob, *, previous: CaptureContext | None = None
) -> WrittenObject:
    """Write ``source`` (a DermGate object) to ``dest`` with ``job``'s UIDs and context.

    ``job`` is the capture's wrap job with its new context and UIDs (the same SOP
    Instance UID; its ``source`` is not read). ``previous`` is the context the
    object was written with, if any: its Sensitive Content items are replaced by the
    new context's; without it every item already in the object is kept (a flag is
    never dropped by accident). Raises :class:`ValueError` for a job without a
    context or a file that is not this capture's DermGate object (``dest`` is then
    untouched) and :class:`OSError` for I/O trouble.
    """
    context = job.context
    if context is None:
        raise ValueError("retargeting needs the capture's new context")
    with source.open("rb") as src:
        try:
            head = read_partial(src, stop_when=_at_bulk)
        except InvalidDicomError as err:
            raise ValueError("not a DermGate object: not a DICOM Part 10 file") from err
        start = src.tell()
        size = os.fstat(src.fileno()).st_size
        dataset = _own_object(head, job, src.read(4), start, size)
        src.seek(start)
        dataset.StudyInstanceUID = job.uids.study
        dataset.SeriesInstanceUID = job.uids.series
        replaced = previous.sensitive if previous is not None else ()
        apply_context(dataset, context, job.offer, replaced_sensitive=replaced)
        header = encode_header(dataset)
        with atomic_writer(dest) as out:
            out.write(header)
            copied = copy_stream(src, out, chunk_size=_CHUNK)
            if copied != size - start:
                raise OSError(f"{source.name} changed size while being rewritten")
    return WrittenObject(
        sop_class_uid=str(dataset.SOPClassUID),
        transfer_syntax_uid=str(dataset.file_meta.TransferSyntaxUID),
    )


def _own_object(head: Dataset, job: WrapJob, bulk: bytes, start: int, size: int) -> Dataset:
    """The header as a plain data set, once it is sure to be this capture's object."""
    meta = head.file_meta
    syntax = UID(str(meta.get("TransferSyntaxUID", "")))
    if not syntax or not syntax.is_little_endian or syntax.is_implicit_VR:
        raise ValueError("not a DermGate object: not explicit VR little endian")
    if str(head.get("SOPClassUID", "")) not in CONTEXT_SOP_CLASSES:
        raise ValueError("not a DermGate object: SOP class not one DermGate writes")
    if (
        str(head.get("SOPInstanceUID", "")) != job.uids.sop_instance
        or str(meta.get("MediaStorageSOPInstanceUID", "")) != job.uids.sop_instance
    ):
        raise ValueError("the file is another instance than the capture's")
    tag = int.from_bytes(bulk[:2], "little") << 16 | int.from_bytes(bulk[2:4], "little")
    if start >= size or tag not in BULK_TAGS:
        raise ValueError("not a DermGate object: no pixel data or document")
    dataset = Dataset()
    dataset.file_meta = meta
    for element in head:
        dataset.add(element)
    return dataset
