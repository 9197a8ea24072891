"""DICOM: the only place that picks an IOD, builds a dataset and writes a Part 10 file.

One module per IOD family (:mod:`.dermoscopy`, :mod:`.photo`, :mod:`.confocal`,
:mod:`.surface`), the modules they share (:mod:`.modules`), JPEG encapsulation
(:mod:`.jpeg`) and the file writer (:mod:`.part10`). Pure builders: no ledger,
no network.
"""

__all__ = [
    "confocal",
    "confocal_sc",
    "confocal_stack",
    "dermoscopy",
    "elements",
    "errors",
    "job",
    "jpeg",
    "modules",
    "part10",
    "photo",
    "surface",
]
