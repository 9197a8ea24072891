"""The MQTT broker and DICOMweb stores: each probed as the box's own link does it
(blocking: each runs its own event loop on the caller's thread)."""

from __future__ import annotations

import asyncio

from gateway.core.config import DermGateConfig, DicomwebDestination
from gateway.core.errors import DeliveryErrorCode
from gateway.status.checks.result import FAIL, OK, UNKNOWN, CheckResult
from gateway.status.mqtt import probe_broker

__all__ = ["check_mqtt", "check_web_destination"]

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


def check_web_destination(dest: DicomwebDestination) -> CheckResult:
    """One QIDO-RS query with the destination's credentials, as the read-back asks."""
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
