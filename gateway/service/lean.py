"""What the service process leaves out of memory: numpy and Pillow, which pydicom
loads if it can.

pydicom imports numpy (and Pillow) at import time whenever they are installed, to
offer pixel data as arrays and to decode compressed pixel data; DermGate never asks
pydicom for either (it writes pixel data as bytes it encoded or received), and a box
installed from the release has no numpy at all (only test tools need it). In a
development virtualenv it is there all the same, and costs an idle ``dermgate run``
about 15 MB of RSS and 0.1 s of start-up; Pillow another 4 MB, loaded by the
gateway's own photo and surface writers when a capture needs them.

:func:`import_dicom_stack` imports pydicom and pynetdicom as the box would, with
numpy and Pillow hidden from them: pydicom then runs in its supported mode without
them, as on the box. Both stay importable afterwards for whatever really needs them
(the photo writer's Pillow, a third-party driver); only pydicom keeps not using them.

:func:`pause_gc_for_start_up` turns the cyclic garbage collector off while
``dermgate run`` imports its ~800 modules and starts its stages: they allocate
hundreds of thousands of objects that live as long as the process (module
dictionaries, functions, classes), and the collector otherwise walks them again
and again (~250 collections, ~0.1 s of CPU, a tenth of the start-up). Nothing is
lost: the start-up's few garbage cycles are collected at once by
:func:`release_start_up_memory`, which turns the collector back on.

:func:`release_start_up_memory` hands back to the system the heap the start-up used
and freed (configuration models, the TOML, reconciliation's queries): glibc keeps
freed memory for the process otherwise, about 2 MB of an idle gateway's RSS.
"""

from __future__ import annotations

import gc
import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

from gateway.core.heap import give_back_free_heap

__all__ = ["import_dicom_stack", "pause_gc_for_start_up", "release_start_up_memory", "resume_gc"]

#: What the service imports under the hidden numpy: pydicom's modules that look
#: for numpy at import time, and pynetdicom (which imports most of pydicom).
DICOM_STACK: tuple[str, ...] = (
    "pydicom",
    "pydicom.pixels",
    "pydicom.pixel_data_handlers",
    "pydicom.encaps",
    "pydicom.filewriter",
    "pynetdicom",
)


class _HideModules(importlib.abc.MetaPathFinder):
    """A finder that answers "not installed" for ``names`` and their submodules."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        """Refuse the hidden modules; let the other finders look for everything else."""
        if any(fullname == name or fullname.startswith(name + ".") for name in self.names):
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def import_dicom_stack(hidden: Sequence[str] = ("numpy", "PIL")) -> bool:
    """Import :data:`DICOM_STACK` with ``hidden`` modules not found; False (and
    nothing done) when pydicom or a hidden module was imported already."""
    if "pydicom" in sys.modules or any(name in sys.modules for name in hidden):
        return False
    finder = _HideModules(hidden)
    sys.meta_path.insert(0, finder)
    try:
        for name in DICOM_STACK:
            importlib.import_module(name)
    finally:
        sys.meta_path.remove(finder)
    return True


def pause_gc_for_start_up() -> None:
    """Turn the cyclic garbage collector off until :func:`release_start_up_memory`
    (or :func:`resume_gc`) turns it back on."""
    gc.disable()


def resume_gc() -> None:
    """Turn the cyclic garbage collector back on (nothing if it is on)."""
    gc.enable()


def release_start_up_memory() -> None:
    """Turn the garbage collector back on, collect the start-up's garbage and return
    free heap pages to the system (glibc ``malloc_trim``; nothing where the C
    library has none)."""
    gc.enable()
    gc.collect()
    give_back_free_heap()
