""" "Why isn't it sending?": checks run on demand, each with advice in plain words.

Every check is blocking (network, subprocess, files) and runs on a worker thread.
A check never raises: a check that cannot tell says "unknown" and why. Results
carry no patient data: host names, ports, AE titles, counts, dates.

Checks: TCP connect + DICOM C-ECHO to each destination (over TLS when configured:
a refused handshake is named); our storage commitment listener answers (an
association and C-ECHO to our own port, as our AE title: a listener that accepts
TCP but whose association slots are all taken fails; its TLS port, if any, takes
connections: :mod:`.tls_checks`); each
PACS confirms what it stores (no ``commitment_overdue`` alarm); clock synchronised
(timedatectl, else the kernel's adjtimex status); disk free against the reserve; days to
expiry of every TLS certificate (the page's, MQTT's, and DICOM TLS: each destination's
CA and client certificate, our listener's certificate and CA); devices not ready; captures
set aside; the MQTT broker accepts this box (a real MQTT connection with the
link's address, login and TLS, when ``[mqtt]`` is configured).
"""

from __future__ import annotations

import asyncio
import ctypes
import shutil
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from gateway.core.alarms import COMMITMENT_OVERDUE
from gateway.core.config import DermGateConfig, DicomDestination, DicomwebDestination
from gateway.core.errors import DeliveryErrorCode
from gateway.dicom.tls import certificate_files
from gateway.forward.association import associate, tls_error
from gateway.status.mqtt import probe_broker
from gateway.status.web.check_result import FAIL, OK, UNKNOWN, WARN, CheckResult
from gateway.status.web.data import Figures, human_age, human_bytes
from gateway.status.web.tls_checks import check_tls_listener, tls_refused

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


def _tcp(host: str, port: int, timeout: float) -> str | None:
    """None if a TCP connection opens, else a plain reason."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except OSError as err:
        return err.strerror or type(err).__name__


def check_destination(dest: DicomDestination, our_ae: str, timeout: float = 5.0) -> CheckResult:
    """TCP connect, then a C-ECHO association as our AE title."""
    name = f"PACS {dest.name} ({dest.ae_title} at {dest.host}:{dest.port})"
    problem = _tcp(dest.host, dest.port, timeout)
    if problem == "refused":
        return CheckResult(
            name,
            FAIL,
            "The computer answers but nothing listens on that port.",
            "Check that the PACS service is running and that the port in the "
            "configuration is the PACS's DICOM port.",
        )
    if problem == "timeout":
        return CheckResult(
            name,
            FAIL,
            "No answer from the network.",
            "Check the network cable and that a firewall lets this box reach "
            f"{dest.host} on port {dest.port}.",
        )
    if problem is not None:
        return CheckResult(
            name,
            FAIL,
            f"Cannot connect: {problem}.",
            "Check the host name or address in the configuration, and the network.",
        )
    from gateway.dicom.network import dermgate_ae

    ae = dermgate_ae(our_ae)
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    assoc = associate(ae, dest)  # over TLS when the destination says so
    try:
        tls = tls_error(assoc, dest)
        if tls is not None:
            return tls_refused(name, tls)
        if assoc.is_rejected:
            return CheckResult(
                name,
                FAIL,
                f"The PACS refuses to talk to {our_ae}.",
                f"Ask the PACS administrator to add the AE title {our_ae} "
                "(and this box's address) to the PACS's known modalities, and "
                f"check that the PACS's AE title is {dest.ae_title}.",
            )
        if not assoc.is_established:
            return CheckResult(
                name,
                FAIL,
                "The PACS closed the connection without answering.",
                "Check the AE titles with the PACS administrator.",
            )
        status = assoc.send_c_echo()
        code = getattr(status, "Status", None) if status else None
        if code == 0:
            return CheckResult(name, OK, "Answers a DICOM echo.")
        return CheckResult(
            name,
            FAIL,
            "Connected, but the echo was not answered.",
            "The PACS may be overloaded or misconfigured; ask its administrator.",
        )
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def _echo(host: str, port: int, ae_title: str, timeout: float) -> str | None:
    """None if ``ae_title`` at ``host:port`` accepts an association and answers a C-ECHO
    (asked as ``ae_title`` itself), else a plain reason."""
    from gateway.dicom.network import dermgate_ae

    ae = dermgate_ae(ae_title)
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    assoc = ae.associate(host, port, ae_title=ae_title)
    try:
        if assoc.is_rejected:
            return "it rejected the association: all its connections may be taken"
        if not assoc.is_established:
            return "it accepts connections but does not answer a DICOM association request"
        status = assoc.send_c_echo()
        code = getattr(status, "Status", None) if status else None
        if code == 0:
            return None
        return "it accepted an association but did not answer the echo"
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def check_listener(
    config: DermGateConfig, timeout: float = 5.0, *, overdue: bool = False
) -> CheckResult:
    """Our storage commitment listener answers an association from this box.

    ``overdue``: a PACS's confirmations are not arriving although we listen.
    """
    g = config.gateway
    host = "127.0.0.1" if g.listen_address in ("0.0.0.0", "", "::") else g.listen_address
    name = f"Commitment listener (port {g.listen_port})"
    if not any(d.storage_commitment for d in config.dicom_destinations()):
        return CheckResult(name, OK, "Not needed: no destination uses storage commitment.")
    problem = _tcp(host, g.listen_port, timeout)
    if problem is not None:
        return CheckResult(
            name,
            FAIL,
            f"Not reachable ({problem}).",
            "Restart the DermGate service; if it stays, another program may use port "
            f"{g.listen_port}.",
        )
    problem = _echo(host, g.listen_port, g.ae_title, timeout)
    if problem is not None:
        return CheckResult(
            name,
            FAIL,
            f"Reachable, but {problem}, so a PACS's confirmations cannot arrive either.",
            "The log names the addresses whose connections were closed (too many, too "
            "slow, too long). If it stays, restart the DermGate service; if another "
            f"program uses port {g.listen_port}, stop it.",
        )
    if overdue:
        return CheckResult(
            name,
            WARN,
            "Listening here, but a PACS's confirmations do not arrive (see below).",
            "The listener works; the PACS sends its reports elsewhere or is blocked.",
        )
    return CheckResult(name, OK, "Answers an association and a DICOM echo.")


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


#: What to do per MQTT link error code (:func:`gateway.status.mqtt.classify_link_error`).
_MQTT_ADVICE = {
    "refused": "Check that the broker is running and that [mqtt] host and port are its "
    "address and port (8883 is usual with TLS, 1883 without).",
    "timeout": "Check the network and any firewall between this box and the broker; with "
    "TLS, also that the broker accepts this box's client certificate (tls_cert).",
    "not_authorised": "Check [mqtt] username and the password in password_file with the "
    "broker's administrator.",
    "tls": "Check tls_ca (the CA that signed the broker's certificate) and that the "
    "broker's certificate names the host in [mqtt] host.",
    "local_file": "Check that password_file, tls_cert and tls_key exist and that the "
    "service can read them.",
    "unknown_host": "Check [mqtt] host (spelling, or use the broker's IP address) and this "
    "box's DNS settings.",
}


def check_mqtt(config: DermGateConfig, timeout: float = 5.0) -> CheckResult | None:
    """Does the broker accept this box? A real MQTT CONNECT, as the link makes it.

    None without ``[mqtt]``. MQTT carries only the fleet status: captures do not
    depend on it, so the finding says so.
    """
    m = config.mqtt
    if m is None:
        return None
    name = f"MQTT broker ({m.host}:{m.port})"
    try:
        error = asyncio.run(probe_broker(m, config.gateway.id, timeout))
    except Exception as err:  # a check never raises
        return CheckResult(name, UNKNOWN, f"Cannot tell ({type(err).__name__}).", "")
    if error is None:
        return CheckResult(name, OK, "Accepts this box: the fleet status is published.")
    return CheckResult(
        name,
        FAIL,
        f"Cannot connect: {error['message']} ({error['code']}). The fleet status "
        "(online, state, events) does not reach the broker; captures are not affected.",
        _MQTT_ADVICE.get(error["code"], "Check [mqtt] host and port, and the network."),
    )


class _Timex(ctypes.Structure):
    _fields_ = [("modes", ctypes.c_uint), ("_rest", ctypes.c_byte * 204)]


def clock_synchronised() -> bool | None:
    """True/False if the system can tell, else None."""
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


def check_disk(path: Path, reserve: int) -> CheckResult:
    """Free space of the spool's filesystem against the reserve."""
    usage = shutil.disk_usage(path if path.exists() else path.parent)
    free, total = human_bytes(usage.free), human_bytes(usage.total)
    text = f"{free} free of {total} (reserve {human_bytes(reserve)})."
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


def certificate_days_left(cert: Path) -> int:
    """Days until ``cert`` (PEM) expires (negative: expired). Raises OSError/ValueError."""
    out = subprocess.run(
        ["openssl", "x509", "-enddate", "-noout", "-in", str(cert)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if out.returncode != 0 or "=" not in out.stdout:
        raise ValueError(out.stderr.strip() or "not a PEM certificate")
    end = datetime.strptime(out.stdout.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y %Z")
    return (end.replace(tzinfo=UTC) - datetime.now(UTC)).days


def check_certificate(cert: Path, what: str = "TLS certificate") -> CheckResult:
    """How long the certificate ``cert`` (PEM) stays valid."""
    name = f"{what} ({cert.name})"
    try:
        days = certificate_days_left(cert)
    except (OSError, ValueError, subprocess.TimeoutExpired) as err:
        return CheckResult(name, UNKNOWN, f"Cannot read it: {err}.", "Check the file path.")
    if days < 0:
        return CheckResult(name, FAIL, "Expired.", "Install a new certificate.")
    if days < 30:
        unit = "day" if days == 1 else "days"
        return CheckResult(name, WARN, f"Expires in {days} {unit}.", "Renew it soon.")
    return CheckResult(name, OK, f"Valid for {days} more days.")


def certificate_checks(config: DermGateConfig) -> list[CheckResult]:
    """Expiry of every certificate the box presents or trusts (page, MQTT, DICOM TLS)."""
    certs: list[tuple[Path | None, str]] = []
    if config.web is not None:
        certs.append((config.web.tls_cert, "TLS certificate"))
    if config.mqtt is not None:
        certs.append((config.mqtt.tls_cert, "MQTT client certificate"))
        certs.append((config.mqtt.tls_ca, "MQTT broker's CA certificate"))
    certs += certificate_files(config)
    return [check_certificate(path, what) for path, what in certs if path is not None]


def check_web_destination(dest: DicomwebDestination) -> CheckResult:
    """One QIDO-RS query with the destination's credentials, as the read-back asks
    (blocking: runs its own event loop on the caller's worker thread)."""
    from gateway.forward.stow import StowSender  # here: aiohttp only when needed

    name = f"DICOMweb store {dest.name} ({dest.host}:{dest.port})"
    error = asyncio.run(StowSender(dest).probe())
    if error is None:
        return CheckResult(name, OK, "Answers a DICOMweb query (QIDO-RS).")
    advice = {
        DeliveryErrorCode.AUTH_REFUSED: "Check the auth keys and the user, password, token "
        "or client secret files with the store's administrator.",
        DeliveryErrorCode.AUTH_UNAVAILABLE: f"{error.detail}: check that the file exists and "
        "the service can read it, or that the token endpoint (token_url) answers.",
        DeliveryErrorCode.UNREACHABLE: "Check url (host, port, http or https), the network "
        "and any firewall or proxy; with https, that tls_ca is the CA of the store's "
        "certificate.",
    }.get(error.code, "Check url (the part before /studies) with the store's administrator.")
    return CheckResult(name, FAIL, f"{error.message}.", advice)


def run_checks(config: DermGateConfig, figures: Figures) -> list[CheckResult]:
    """Every check, in the order a technician should read them (blocking)."""
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
    confirmations = check_confirmations(config, figures)
    results.append(check_listener(config, overdue=any(r.status == FAIL for r in confirmations)))
    tls_listener = check_tls_listener(config)
    if tls_listener is not None:
        results.append(tls_listener)
    results += confirmations
    results.append(check_clock())
    results.append(check_disk(config.spool_dir(), figures.disk.reserve))
    mqtt = check_mqtt(config)
    if mqtt is not None:
        results.append(mqtt)
    results += certificate_checks(config)
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
