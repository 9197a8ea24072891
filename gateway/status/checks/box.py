"""The box itself, without the network: the state folder, the devices' ports and
folders, the users file, the clock and the disk. Blocking (files, a subprocess)."""

from __future__ import annotations

import ctypes
import os
import shutil
import stat
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from gateway.core.clock import clock_synchronised as service_clock_rule
from gateway.core.config import DermGateConfig
from gateway.devices.registry import BrokenDriver, UnknownDriver, find_driver
from gateway.status.checks.result import FAIL, OK, UNKNOWN, WARN, CheckResult

__all__ = [
    "check_clock",
    "check_disk",
    "check_state_dir",
    "check_users_file",
    "clock_synchronised",
    "device_checks",
]


def _writable_problem(folder: Path) -> str | None:
    """None if a file can be created (and removed) in ``folder``, else why not."""
    if not folder.is_dir():
        return "is not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".dermgate-check-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        return f"cannot be written ({err.strerror or type(err).__name__})"
    return None


def check_state_dir(config: DermGateConfig) -> CheckResult:
    """The state folder (ledger, spool, page files) and its spool can be written."""
    state = config.gateway.state_dir
    name = f"State folder ({state})"
    if not state.exists():
        return CheckResult(
            name,
            WARN,
            "Does not exist yet.",
            "The service creates it at its first start (the installer makes it); "
            "check the path in [gateway] state_dir.",
        )
    for folder in (state, config.spool_dir()):
        if not folder.exists():
            continue
        problem = _writable_problem(folder)
        if problem is not None:
            return CheckResult(
                name,
                FAIL,
                f"{folder} {problem}: the service cannot keep captures.",
                f"Make {folder} a folder the service user can write (it belongs to the "
                "user in the unit, dermgate), or fix [gateway] state_dir; check that the "
                "disk is not mounted read-only.",
            )
    return CheckResult(name, OK, "Writable.")


def _device_paths(config: DermGateConfig) -> list[tuple[str, str, Path]]:
    """(device name, option key, path) of each device's folder or device node.

    A driver's options say them: any option holding a path (a drop folder) and any
    holding a ``/dev/`` node (a serial port). Hotplug devices are left out (their
    node appears when plugged in), and so are URLs (``socket://``) and broken drivers.
    """
    found: list[tuple[str, str, Path]] = []
    for index, device in enumerate(config.devices):
        if device.hotplug:
            continue
        try:
            options = find_driver(device.driver).Options.model_validate(device.options())
        except (BrokenDriver, UnknownDriver, ValueError):
            continue  # told by the configuration's own check
        for key in type(options).model_fields:
            value = getattr(options, key)
            if isinstance(value, Path):
                found.append((config.device_name(index), key, value))
            elif isinstance(value, str) and value.startswith("/dev/"):
                found.append((config.device_name(index), key, Path(value)))
    return found


def device_checks(config: DermGateConfig) -> list[CheckResult]:
    """Each device's port or folder is there (a missing one stops only that device)."""
    results = []
    for device, key, path in _device_paths(config):
        name = f"Device {device} ({key} {path})"
        is_node = str(path).startswith("/dev/")
        if not path.exists():
            if is_node:
                results.append(
                    CheckResult(
                        name,
                        WARN,
                        "Not present: the device is unplugged, off, or on another port.",
                        "Check the cable and that the device is on; if it shows up under "
                        f"another name (ls /dev/serial/by-id/), set {key} to it.",
                    )
                )
            else:
                results.append(
                    CheckResult(
                        name,
                        WARN,
                        "The folder does not exist: nothing from this device can arrive.",
                        f"Create it (mkdir -p {path}) so the device and the service can use "
                        f"it, or correct {key} in its [[devices]] entry.",
                    )
                )
            continue
        if not is_node and not path.is_dir():
            results.append(
                CheckResult(
                    name,
                    WARN,
                    "Not a folder.",
                    f"Point {key} in its [[devices]] entry at the device's folder.",
                )
            )
            continue
        results.append(CheckResult(name, OK, "Present."))
    return results


def _readable_by(info: os.stat_result, uid: int, gid: int, bits: tuple[int, int, int]) -> bool:
    """Whether ``uid``/``gid`` has the permission ``bits`` (user, group, other) on it."""
    if uid == 0:
        return True
    if info.st_uid == uid:
        return bool(info.st_mode & bits[0])
    if info.st_gid == gid:
        return bool(info.st_mode & bits[1])
    return bool(info.st_mode & bits[2])


def check_users_file(config: DermGateConfig) -> CheckResult | None:
    """The page's users file can be read by the service user (None without ``[web]``).

    The service user is the owner of ``state_dir`` (as the commands hand files over to
    it); run by that user, a plain read is tried instead.
    """
    if config.web is None:
        return None
    path = config.users_path()
    name = f"Users file ({path})"
    if not path.exists():
        return CheckResult(
            name,
            WARN,
            "No logins yet: nobody can use the page.",
            "Add one: dermgate user add NAME --config FILE",
        )
    state = config.gateway.state_dir
    try:
        owner = os.stat(state) if state.exists() else None
        info = path.stat()
        parent = path.parent.stat()
    except OSError as err:
        return CheckResult(name, FAIL, f"Cannot be read: {err.strerror}.", "Check the path.")
    if owner is not None and os.geteuid() != owner.st_uid:
        uid, gid = owner.st_uid, owner.st_gid
        readable = _readable_by(info, uid, gid, (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH))
        readable &= _readable_by(parent, uid, gid, (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH))
    else:
        readable = os.access(path, os.R_OK)
    if not readable:
        return CheckResult(
            name,
            FAIL,
            "The service user cannot read it: nobody can log in to the page.",
            f"Give it to the service user: chown dermgate:dermgate {path} (or run "
            "dermgate user add again, which hands it over).",
        )
    return CheckResult(name, OK, "Readable by the service.")


class _Timex(ctypes.Structure):
    _fields_ = [("modes", ctypes.c_uint), ("_rest", ctypes.c_byte * 204)]


def clock_synchronised() -> bool | None:
    """True/False if the system can tell, else None: first the service's own rule
    (:func:`gateway.core.clock.clock_synchronised`: a clock before 2025, or
    systemd-timesyncd's verdict; the one behind the ``clock_not_synchronised`` alarm, so
    the check never says "synchronised" while the alarm is up), then timedatectl, then
    the kernel's adjtimex status (chrony or ntpd)."""
    known = service_clock_rule()
    if known is not None:
        return known
    if shutil.which("timedatectl"):
        try:
            out = subprocess.run(
                ["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            value = out.stdout.strip()
            if out.returncode == 0 and value in ("yes", "no"):
                return value == "yes"
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        state = int(libc.adjtimex(ctypes.byref(_Timex())))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != 5  # TIME_ERROR: the kernel clock is not synchronised


def check_clock() -> CheckResult:
    """Is the clock synchronised (captures and certificates depend on it)?"""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    synced = clock_synchronised()
    if synced is True:
        return CheckResult("Clock", OK, f"Synchronised ({now}).")
    if synced is False:
        return CheckResult(
            "Clock",
            WARN,
            f"Not synchronised ({now}).",
            "Check that the box reaches a time server (NTP); a wrong clock "
            "puts wrong dates on images and breaks TLS.",
        )
    return CheckResult(
        "Clock",
        UNKNOWN,
        f"Cannot tell whether it is synchronised ({now}).",
        "Compare the time shown with a reliable clock.",
    )


def _size(n: int) -> str:
    return f"{n / 10**9:.1f} GB" if n >= 10**9 else f"{n / 10**6:.0f} MB"


def check_disk(path: Path, reserve: int) -> CheckResult:
    """Free space of the spool's filesystem against the reserve (bytes)."""
    where = path
    while not where.exists() and where != where.parent:
        where = where.parent
    usage = shutil.disk_usage(where)
    text = f"{_size(usage.free)} free of {_size(usage.total)} (reserve {_size(reserve)})."
    if usage.free < reserve:
        return CheckResult(
            "Disk",
            FAIL,
            text,
            "New captures are refused. Free space, or fix delivery so that "
            "confirmed captures can be purged.",
        )
    if usage.free < 3 * reserve:
        return CheckResult("Disk", WARN, text, "Space is getting short; check the backlog.")
    return CheckResult("Disk", OK, text)
