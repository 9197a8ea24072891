""" "Why isn't it sending?": the page's checks, run on demand, each with advice in plain
words.

The checks of the configuration, the box and every peer are the ones ``dermgate check``
runs (:mod:`gateway.status.checks`, the same code); this module adds what only the
running service knows: each PACS confirms what it stores (no ``commitment_overdue``
alarm), deliveries failing or waiting for their window, devices not ready, captures set
aside. Blocking: the route runs :func:`run_checks` on a worker thread. Results carry no
patient data: host names, ports, AE titles, counts, dates.
"""

from __future__ import annotations

import socket

from gateway.core.alarms import COMMITMENT_OVERDUE
from gateway.core.config import DermGateConfig
from gateway.status.checks.box import check_clock, check_disk, clock_synchronised
from gateway.status.checks.certificates import (
    certificate_checks,
    certificate_days_left,
    check_certificate,
)
from gateway.status.checks.dicom import check_destination, check_listener, check_worklist
from gateway.status.checks.result import FAIL, OK, UNKNOWN, WARN, CheckResult
from gateway.status.checks.run import box_checks, destination_checks, guarded, listener_checks
from gateway.status.checks.services import check_mqtt, check_web_destination
from gateway.status.web.data import Figures, human_age

__all__ = [
    "FAIL",
    "OK",
    "UNKNOWN",
    "WARN",
    "CheckResult",
    "certificate_checks",
    "certificate_days_left",
    "check_certificate",
    "check_clock",
    "check_confirmations",
    "check_destination",
    "check_disk",
    "check_listener",
    "check_mqtt",
    "check_web_destination",
    "clock_synchronised",
    "run_checks",
]


def _address_towards(host: str, port: int) -> str | None:
    """This box's own address on the way to ``host`` (no packet is sent), if known."""
    try:
        family, kind, proto, _, target = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.connect(target)
            return str(probe.getsockname()[0])
    except (OSError, UnicodeError, IndexError):
        return None


def check_confirmations(config: DermGateConfig, figures: Figures) -> list[CheckResult]:
    """Does each PACS with storage commitment confirm what it stores?

    Told by the ``commitment_overdue`` alarm: the PACS stored the captures and
    accepted to confirm them, but its reports never reached our listener.
    """
    overdue = {str(a.get("subject")) for a in figures.alarms if a.get("code") == COMMITMENT_OVERDUE}
    g = config.gateway
    results = []
    for dest in config.dicom_destinations():
        if not dest.storage_commitment:
            continue
        name = f"Confirmations from {dest.name}"
        if dest.name not in overdue:
            results.append(CheckResult(name, OK, "No confirmation is overdue."))
            continue
        ours = _address_towards(dest.host, dest.port)
        where = f"this box's address ({ours})" if ours else "this box's address"
        results.append(
            CheckResult(
                name,
                FAIL,
                f"{dest.name} stores the captures but does not confirm them: no storage "
                f"commitment report for more than {human_age(dest.commitment_alarm_after)}. "
                "Nothing is deleted here until it confirms, so the disk slowly fills.",
                f"Ask the PACS administrator to check the PACS's entry for this box: AE "
                f"title {g.ae_title}, {where}, port {g.listen_port} (our listen_port). "
                f"Check that a firewall lets {dest.host} reach this box on port "
                f"{g.listen_port}.",
            )
        )
    return results


def run_checks(config: DermGateConfig, figures: Figures) -> list[CheckResult]:
    """Every check, in the order a technician should read them (blocking): the peers,
    the confirmations, the box (as ``dermgate check --connect``), then the live lines."""
    confirmations = check_confirmations(config, figures)
    results = destination_checks(config)
    results += listener_checks(config, overdue=any(r.status == FAIL for r in confirmations))
    results += confirmations
    results += guarded("Worklist SCP", lambda: check_worklist(config))
    results += guarded("MQTT broker", lambda: check_mqtt(config))
    results += box_checks(config)
    for dest in figures.destinations:
        if dest.waiting_for_window:
            results.append(
                CheckResult(
                    f"Deliveries to {dest.name}",
                    OK,
                    f"{dest.pending} waiting for the send window (not a fault).",
                    "They go when the window opens; Send now on the overview sends them now.",
                )
            )
        if dest.removed:
            results.append(
                CheckResult(
                    f"Deliveries to {dest.name}",
                    WARN,
                    f"destination removed: {dest.pending + dest.sent} capture(s) still wait for "
                    "it and are kept in the spool",
                    f"Put {dest.name} back in [[destinations]] to send and confirm them (until "
                    "then they are never purged), or, if it is retired for good: dermgate spool "
                    f"forget-destination {dest.name} --yes.",
                )
            )
        elif dest.failing:
            results.append(
                CheckResult(
                    f"Deliveries to {dest.name}",
                    FAIL,
                    f"{dest.retrying} waiting; last error: {dest.last_error}",
                    "Fix the cause above; DermGate retries by itself.",
                )
            )
    for device in figures.devices:
        state = str(device.get("state"))
        if state not in ("READY", "TRANSFERRING"):
            results.append(
                CheckResult(
                    f"Device {device.get('name')}",
                    WARN,
                    f"{state}: {device.get('detail') or ''}",
                    "Check the cable and that the device is on.",
                )
            )
    if figures.quarantined_open:
        results.append(
            CheckResult(
                "Spool",
                WARN,
                f"{figures.quarantined_open} capture(s) set aside.",
                "Open the spool view: each shows why; retry once fixed.",
            )
        )
    return results
