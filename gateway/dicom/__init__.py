"""DICOM: the only place that picks an IOD, builds a dataset and writes a Part 10 file.

One module per IOD family (:mod:`.dermoscopy`, :mod:`.photo`, :mod:`.confocal`,
:mod:`.confocal_sc`, :mod:`.surface`), each starting from the modules they share
(:mod:`.modules`, :func:`~.modules.new_instance`; coded concepts from :mod:`.codes`)
and writing the capture's patient/order/lesion context into it (:mod:`.context`;
:mod:`.retarget` rewrites a written object with another context); JPEG encapsulation
(:mod:`.jpeg`); the one Part 10 writer every builder uses (:mod:`.part10`); and
the one module that picks the writer for a capture (:mod:`.writers`), used by the
wrapping stage and by intake's inline JPEG path; the Modality Performed Procedure
Step datasets (:mod:`.mpps`); the derived objects of a widely accepted class
sent to a receiver that refuses the original's (:mod:`.compatible`); and the
pynetdicom settings every DIMSE user of the box shares (:mod:`.network`), with the
TLS contexts of DICOM over TLS (:mod:`.tls`). Pure builders: no ledger, no network.
"""

__all__ = [
    "codes",
    "compatible",
    "confocal",
    "confocal_sc",
    "confocal_stack",
    "context",
    "dermoscopy",
    "elements",
    "errors",
    "for_drivers",
    "job",
    "jpeg",
    "modules",
    "mpps",
    "network",
    "part10",
    "photo",
    "retarget",
    "sop_classes",
    "surface",
    "tls",
    "writers",
]
