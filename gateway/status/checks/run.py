"""Which checks run, in the order a technician should read them: the configuration and
the box (offline), then every peer (over the network). ``dermgate check`` runs
:func:`box_checks` and, with ``--connect``, :func:`connect_checks`; the page runs both
and adds what only the running service knows (:mod:`gateway.status.web.checks`)."""

from __future__ import annotations

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
from gateway.status.checks.result import FAIL, CheckResult
from gateway.status.checks.services import check_mqtt, check_web_destination
from gateway.status.checks.tls import check_tls_listener

__all__ = ["box_checks", "connect_checks", "destination_checks", "listener_checks"]


def box_checks(config: DermGateConfig) -> list[CheckResult]:
    """The box without the network: state folder, disk, devices, users file, clock,
    certificates (blocking)."""
    results = [check_state_dir(config)]
    results.append(check_disk(config.spool_dir(), config.spool.reserve_mb * 1024 * 1024))
    results += device_checks(config)
    users = check_users_file(config)
    if users is not None:
        results.append(users)
    results.append(check_clock())
    results += certificate_checks(config)
    return results


def destination_checks(config: DermGateConfig) -> list[CheckResult]:
    """A C-ECHO to each DICOM destination, a QIDO-RS query to each DICOMweb store."""
    results = [
        check_destination(d, config.gateway.ae_title)
        if isinstance(d, DicomDestination)
        else check_web_destination(d)
        for d in config.destinations
    ]
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
    results = [check_listener(config, overdue=overdue)]
    tls_listener = check_tls_listener(config)
    if tls_listener is not None:
        results.append(tls_listener)
    return results


def connect_checks(config: DermGateConfig) -> list[CheckResult]:
    """Every peer: destinations, our listener, the worklist SCP, the MQTT broker."""
    results = destination_checks(config) + listener_checks(config)
    for extra in (check_worklist(config), check_mqtt(config)):
        if extra is not None:
            results.append(extra)
    return results
