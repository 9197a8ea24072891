"""Which checks run, in the order a technician should read them: the configuration and
the box (offline), then every peer (over the network). ``dermgate check`` runs
:func:`box_checks` and, with ``--connect``, :func:`connect_checks`; the page runs both
and adds what only the running service knows (:mod:`gateway.status.web.checks`)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from gateway.core.config import DermGateConfig, DicomDestination
from gateway.status.checks.box import (
    check_clock,
    check_disk,
    check_state_dir,
    check_users_file,
    device_checks,
)
from gateway.status.checks.certificates import certificate_checks
from gateway.status.checks.dicom import check_destination, check_listener, check_worklist
from gateway.status.checks.result import FAIL, UNKNOWN, CheckResult
from gateway.status.checks.services import check_mqtt, check_web_destination
from gateway.status.checks.tls import check_tls_listener

__all__ = ["box_checks", "connect_checks", "destination_checks", "guarded", "listener_checks"]


def guarded(
    name: str, check: Callable[[], CheckResult | list[CheckResult] | None]
) -> list[CheckResult]:
    """``check()``'s lines; a check that raises after all is one "cannot tell" line
    named ``name`` (the error's type only: its message might quote a file)."""
    try:
        found = check()
    except Exception as err:  # a check never raises; the command must still answer
        return [CheckResult(name, UNKNOWN, f"Cannot tell ({type(err).__name__}).", "")]
    if found is None:
        return []
    return found if isinstance(found, list) else [found]


def box_checks(config: DermGateConfig) -> list[CheckResult]:
    """The box without the network: state folder, disk, devices, users file, clock,
    certificates (blocking)."""
    reserve = config.spool.reserve_mb * 1024 * 1024
    results = guarded("State folder", lambda: check_state_dir(config))
    results += guarded("Disk", lambda: check_disk(config.spool_dir(), reserve))
    results += guarded("Devices", lambda: device_checks(config))
    results += guarded("Users file", lambda: check_users_file(config))
    results += guarded("Clock", check_clock)
    results += guarded("Certificates", lambda: certificate_checks(config))
    return results


def destination_checks(config: DermGateConfig) -> list[CheckResult]:
    """A C-ECHO to each DICOM destination, a QIDO-RS query to each DICOMweb store."""
    results: list[CheckResult] = []
    for d in config.destinations:
        if isinstance(d, DicomDestination):
            echo = partial(check_destination, d, config.gateway.ae_title)
            results += guarded(f"PACS {d.name}", echo)
        else:
            results += guarded(f"DICOMweb store {d.name}", partial(check_web_destination, d))
    if not config.destinations:
        results.append(
            CheckResult(
                "PACS",
                FAIL,
                "No destination is configured.",
                "Add a [[destinations]] section to the configuration.",
            )
        )
    return results


def listener_checks(config: DermGateConfig, *, overdue: bool = False) -> list[CheckResult]:
    """Our commitment listener (and its TLS port) answer; ``overdue``: a PACS's
    confirmations do not arrive although it does."""
    results = guarded("Commitment listener", lambda: check_listener(config, overdue=overdue))
    return results + guarded("Commitment listener, TLS", lambda: check_tls_listener(config))


def connect_checks(config: DermGateConfig) -> list[CheckResult]:
    """Every peer: destinations, our listener, the worklist SCP, the MQTT broker."""
    results = destination_checks(config) + listener_checks(config)
    results += guarded("Worklist SCP", lambda: check_worklist(config))
    return results + guarded("MQTT broker", lambda: check_mqtt(config))
