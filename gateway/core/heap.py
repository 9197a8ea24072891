"""The service's heap: large buffers go back to the system when they are freed.

glibc's malloc serves blocks of 128 KiB and more with their own ``mmap`` (returned
to the system on ``free``) until the first such block is freed; from then on it
raises that threshold (up to 32 MiB) and carves the blocks from its heaps: one
arena per thread that allocates, and ``asyncio.to_thread`` runs several. The
1 MiB blocks that stream a capture (intake's writes, the USB reads, C-STORE and
STOW-RS chunks) then leave each arena at its high-water mark: ~10 MB more peak RSS
for a confocal stack, whatever its size (bench/confocal_memory.py: growth above
the idle process +16 MB, +6 MB with the threshold fixed). Setting
``M_MMAP_THRESHOLD`` explicitly turns the adjustment off.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Final

from gateway.core.libc import c_function

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD: Final = -3  # <malloc.h>
#: glibc's default, kept for good: blocks this large or larger are mmapped.
MMAP_THRESHOLD: Final = 128 * 1024


def keep_heap_flat() -> bool:
    """Fix the allocator's mmap threshold (glibc); False where there is no ``mallopt``."""
    mallopt = c_function("mallopt", (ctypes.c_int, ctypes.c_int))
    if mallopt is None:  # not glibc (musl has no mallopt)
        return False
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if not done:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused")
    return done


def give_back_free_heap() -> None:
    """Return the heap's free pages to the system (glibc ``malloc_trim``; nothing
    where the C library has none)."""
    trim = c_function("malloc_trim", (ctypes.c_size_t,))
    if trim is not None:
        trim(0)
