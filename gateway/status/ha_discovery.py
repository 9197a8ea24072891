"""Home Assistant MQTT discovery: the retained configs that describe the box's entities.

Every entity reads the retained state document (``P/state``) through a value template
and uses ``P/status`` as its availability. Topics (``gid`` = gateway id):

* ``homeassistant/sensor/<gid>_<key>/config`` for the sensors of :data:`SENSORS` (the
  topics of the first release, kept as they were);
* ``homeassistant/binary_sensor/<gid>/problem/config``: ON while the page's verdict
  is not green (``device_class: problem``);
* ``homeassistant/binary_sensor/<gid>/dest_<name>/config`` per configured destination:
  ON while it answers (``device_class: connectivity``; unknown until first tried). A
  destination dropped from the configuration has its config deleted (an empty
  retained message) when its old retained config is seen at connect;
* ``homeassistant/binary_sensor/<gid>/under_voltage/config``: ON while the Pi's
  supply is too weak (unknown on a box that is not a Pi).

Each config carries ``origin`` (DermGate, its version, the page's "why" address when
the page has one) and the shared ``device`` (with ``configuration_url``: the page's
address, only when it is known — the configured ``public_url``, or a ``listen``
address that is neither a wildcard nor loopback; never a guess). Figures about the
box rather than the clinic's work are ``entity_category: diagnostic``. Uptime is a
``timestamp`` sensor of the run's start (``started``), so Home Assistant does not
record a new value every second.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from gateway.core.config import WebSettings

__all__ = [
    "BINARY_PREFIX",
    "SENSORS",
    "DiscoveryInfo",
    "discovery_messages",
    "page_url",
    "stale_destination_topic",
]

BINARY_PREFIX = "homeassistant/binary_sensor"
_DIAGNOSTIC = "diagnostic"


@dataclass(frozen=True, slots=True)
class _Sensor:
    name: str
    template: str
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = "measurement"
    diagnostic: bool = False


#: key → sensor (the key is part of its topic and unique_id: never renamed).
SENSORS: dict[str, _Sensor] = {
    "undelivered": _Sensor("Captures waiting", "{{ value_json.spool.undelivered }}"),
    "oldest_waiting": _Sensor(
        "Oldest waiting capture",
        "{{ value_json.spool.oldest_undelivered_age_s or 0 }}",
        "s",
        "duration",
    ),
    "commitment_lag": _Sensor(
        "Commitment lag", "{{ value_json.spool.commitment_lag_s or 0 }}", "s", "duration"
    ),
    "quarantined": _Sensor("Quarantined captures", "{{ value_json.spool.quarantined }}"),
    "disk_free": _Sensor(
        "Disk free", "{{ value_json.disk.free_mb }}", "MiB", "data_size", diagnostic=True
    ),
    "alarms": _Sensor("Active alarms", "{{ value_json.alarms | length }}"),
    "uptime": _Sensor(
        "Started", "{{ value_json.started }}", None, "timestamp", None, diagnostic=True
    ),
    "cpu_temperature": _Sensor(
        "CPU temperature",
        "{{ value_json.health.cpu_temp_c if value_json.health is defined else None }}",
        "°C",
        "temperature",
        diagnostic=True,
    ),
}

_PROBLEM = (
    "{{ 'None' if value_json.verdict is not defined "
    "else ('OFF' if value_json.verdict.colour == 'green' else 'ON') }}"
)
_UNDER_VOLTAGE = (
    "{% set v = value_json.health.under_voltage if value_json.health is defined else None %}"
    "{{ 'None' if v is none else ('ON' if v else 'OFF') }}"
)


def _reachable_template(name: str) -> str:
    # Destination names are [A-Za-z0-9_-]{1,32} (validated), safe inside quotes.
    return (
        f"{{% set d = value_json.destinations | selectattr('name', 'equalto', '{name}') "
        "| list %}"
        "{{ 'None' if not d or d[0].reachable is none else ('ON' if d[0].reachable else 'OFF') }}"
    )


@dataclass(frozen=True, slots=True)
class DiscoveryInfo:
    """What the configs are made of."""

    gateway_id: str
    software: str
    state_topic: str
    status_topic: str
    destinations: tuple[str, ...]
    """The configured destinations (each gets a connectivity sensor)."""
    configuration_url: str | None = None
    """The local page's address as others reach it (None: not known, left out)."""


def page_url(web: WebSettings | None) -> str | None:
    """The page's address for Home Assistant: ``public_url`` if set, else the
    ``listen`` address when it names one host others can reach (not 0.0.0.0, ::,
    nor loopback); else None."""
    if web is None:
        return None
    if web.public_url:
        return web.public_url
    host, port = web.host_port()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host in ("", "localhost"):
            return None
        shown = host  # a host name: as configured
    else:
        if address.is_unspecified or address.is_loopback:
            return None
        shown = f"[{host}]" if address.version == 6 else host
    scheme = "https" if web.tls_cert is not None else "http"
    return f"{scheme}://{shown}:{port}/"


def _common(info: DiscoveryInfo, key: str) -> dict[str, Any]:
    gid = info.gateway_id
    device: dict[str, Any] = {
        "identifiers": [f"dermgate_{gid}"],
        "name": f"DermGate {gid}",
        "manufacturer": "DermGate",
        "model": "DermGate imaging gateway",
        "sw_version": info.software,
    }
    origin: dict[str, Any] = {"name": "DermGate", "sw_version": info.software}
    if info.configuration_url:
        device["configuration_url"] = info.configuration_url
        origin["support_url"] = info.configuration_url.rstrip("/") + "/why"
    return {
        "unique_id": f"dermgate_{gid}_{key}",
        "state_topic": info.state_topic,
        "availability_topic": info.status_topic,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
        "origin": origin,
    }


def discovery_messages(info: DiscoveryInfo) -> list[tuple[str, dict[str, Any]]]:
    """(topic, config) for every entity of the box."""
    gid = info.gateway_id
    out: list[tuple[str, dict[str, Any]]] = []
    for key, sensor in SENSORS.items():
        config = {"name": sensor.name, **_common(info, key), "value_template": sensor.template}
        if sensor.unit is not None:
            config["unit_of_measurement"] = sensor.unit
        if sensor.device_class is not None:
            config["device_class"] = sensor.device_class
        if sensor.state_class is not None:
            config["state_class"] = sensor.state_class
        if sensor.diagnostic:
            config["entity_category"] = _DIAGNOSTIC
        out.append((f"homeassistant/sensor/{gid}_{key}/config", config))
    binaries: list[tuple[str, str, str, str, bool]] = [
        ("problem", "Problem", _PROBLEM, "problem", False),
        ("under_voltage", "Under-voltage", _UNDER_VOLTAGE, "problem", True),
    ]
    binaries += [
        (f"dest_{name}", f"Destination {name}", _reachable_template(name), "connectivity", True)
        for name in info.destinations
    ]
    for key, name, template, device_class, diagnostic in binaries:
        config = {
            "name": name,
            **_common(info, key),
            "value_template": template,
            "device_class": device_class,
            "payload_on": "ON",
            "payload_off": "OFF",
        }
        if diagnostic:
            config["entity_category"] = _DIAGNOSTIC
        out.append((f"{BINARY_PREFIX}/{gid}/{key}/config", config))
    return out


def stale_destination_topic(topic: str, gateway_id: str, configured: tuple[str, ...]) -> bool:
    """Whether ``topic`` is this box's connectivity config of a destination that is no
    longer configured (its retained config is then deleted)."""
    prefix = f"{BINARY_PREFIX}/{gateway_id}/dest_"
    if not topic.startswith(prefix) or not topic.endswith("/config"):
        return False
    name = topic[len(prefix) : -len("/config")]
    return bool(name) and "/" not in name and name not in configured
