"""The box unit's process rules, applied to a child process without systemd.

systemd cannot run here, so a test that wants to know whether ``dermgate run`` works
under ``image/dermgate.service`` applies the same rules itself, in the child before
``exec``, with the kernel interfaces systemd uses:

- ``MemoryDenyWriteExecute=yes``: ``prctl(PR_SET_MDWE)`` (kept across exec; what
  systemd ≥ 255 uses too);
- ``SystemCallFilter=``: a seccomp filter built with libseccomp (systemd's own library)
  from the unit's lines, the groups expanded by ``systemd-analyze syscall-filter``;
  anything else fails with EPERM, as with the unit's ``SystemCallErrorNumber=EPERM``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import re
import shutil
import subprocess
from pathlib import Path

from gateway.conformance.peers import service_limits

__all__ = ["deny_write_execute", "unit_rules", "unit_syscalls"]

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
SCMP_ACT_ALLOW = 0x7FFF0000


def _scmp_act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


@functools.cache
def _group(name: str) -> frozenset[str]:
    """The system calls of a ``@group``, nested groups expanded."""
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is missing: run scripts/setup.sh --test"
    out = subprocess.run(
        [analyze, "syscall-filter", name], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        calls |= _group(item) if item.startswith("@") else {item}
    return frozenset(calls)


def unit_syscalls(unit: Path) -> frozenset[str]:
    """The system calls the unit's ``SystemCallFilter=`` lines allow (an allow list
    first, then ``~`` lines taking groups or calls away, as systemd reads them)."""
    allowed: set[str] = set()
    for line in unit.read_text(encoding="utf-8").splitlines():
        found = re.fullmatch(r"SystemCallFilter=(~?)(.*)", line.strip())
        if found is None:
            continue
        names: set[str] = set()
        for item in found.group(2).split():
            names |= _group(item) if item.startswith("@") else {item}
        if found.group(1):
            allowed -= names
        else:
            allowed |= names
    assert allowed, f"{unit} has no SystemCallFilter= allow list"
    return frozenset(allowed)


def _load_filter(allowed: frozenset[str]) -> None:
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2")
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(_scmp_act_errno(errno.EPERM))
    if not ctx:
        raise OSError("seccomp_init failed")
    for name in sorted(allowed):
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0:
            continue  # not a system call of this architecture
        if lib.seccomp_rule_add(ctx, SCMP_ACT_ALLOW, number, 0) != 0:
            raise OSError(f"seccomp_rule_add {name} failed")
    if lib.seccomp_load(ctx) != 0:
        raise OSError("seccomp_load failed")


def deny_write_execute() -> None:
    """In a child before exec: the descriptor limit, and no W+X memory from then on."""
    service_limits()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE) refused")


def unit_rules(unit: Path) -> functools.partial[None]:
    """A ``preexec_fn`` applying the unit's memory and system-call rules (the list is
    read in the parent: the child only loads it)."""
    return functools.partial(_apply, unit_syscalls(unit))


def _apply(allowed: frozenset[str]) -> None:
    deny_write_execute()
    _load_filter(allowed)
