"""The few C library calls Python's standard library does not offer, in one place.

``sync_file_range`` (:mod:`gateway.core.files`), ``inotify_init1`` and
``inotify_add_watch`` (:mod:`gateway.devices.folder_events`), ``mallopt`` and
``malloc_trim`` (:mod:`gateway.core.heap`) come from the process's own C library
(``errno`` kept for :func:`ctypes.get_errno`). Where one is missing (not Linux, not
glibc) :func:`c_function` says None and its caller does without.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence
from typing import Any

__all__ = ["c_function"]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def c_function(name: str, argtypes: Sequence[Any], restype: Any = ctypes.c_int) -> Any | None:
    """The C library's function ``name`` with its argument and result types set;
    None where the C library has no such function."""
    libc = _libc()
    function = getattr(libc, name, None) if libc is not None else None
    if function is None:
        return None
    function.argtypes = list(argtypes)
    function.restype = restype
    return function
