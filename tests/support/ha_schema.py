"""Home Assistant's MQTT discovery rules for the configs DermGate sends, and its way of
rendering their value templates.

The ``homeassistant`` package is not installed for the tests: current releases need
Python ≥ 3.13 (this project runs 3.11), and the last release for 3.11 (2024.3.3) pins
its own aiohttp, older than ours. So its voluptuous schemas are not imported here;
these checks follow its documentation
and ``homeassistant/components/mqtt/schemas.py`` (device and origin blocks),
``sensor.py`` and ``binary_sensor.py`` (keys, device classes, units, state classes).
Templates are rendered with Jinja2 as Home Assistant does: ``value_json`` is the
parsed payload, and a result of ``None`` means "unknown".
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlparse

import jinja2

_COMMON = {
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "default_entity_id",
    "device",
    "device_class",
    "enabled_by_default",
    "encoding",
    "entity_category",
    "entity_picture",
    "expire_after",
    "force_update",
    "icon",
    "json_attributes_template",
    "json_attributes_topic",
    "name",
    "object_id",
    "origin",
    "payload_available",
    "payload_not_available",
    "platform",
    "qos",
    "state_topic",
    "unique_id",
    "value_template",
}
KEYS = {
    "sensor": _COMMON
    | {
        "last_reset_value_template",
        "options",
        "state_class",
        "suggested_display_precision",
        "unit_of_measurement",
    },
    "binary_sensor": _COMMON | {"off_delay", "payload_off", "payload_on"},
}
DEVICE_KEYS = {
    "configuration_url",
    "connections",
    "hw_version",
    "identifiers",
    "manufacturer",
    "model",
    "model_id",
    "name",
    "serial_number",
    "suggested_area",
    "sw_version",
    "via_device",
}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
#: SensorDeviceClass values this checker knows with their units (None: no unit allowed).
SENSOR_UNITS: dict[str, set[str | None]] = {
    "duration": {"d", "h", "min", "s", "ms", "µs"},
    "data_size": {
        "bit",
        "kbit",
        "Mbit",
        "Gbit",
        "B",
        "kB",
        "MB",
        "GB",
        "TB",
        "PB",
        "KiB",
        "MiB",
        "GiB",
        "TiB",
        "PiB",
    },
    "temperature": {"°C", "°F", "K"},
    "timestamp": {None},
}
NON_NUMERIC = {"timestamp", "date", "enum"}
BINARY_CLASSES = {
    "battery",
    "battery_charging",
    "carbon_monoxide",
    "cold",
    "connectivity",
    "door",
    "garage_door",
    "gas",
    "heat",
    "light",
    "lock",
    "moisture",
    "motion",
    "moving",
    "occupancy",
    "opening",
    "plug",
    "power",
    "presence",
    "problem",
    "running",
    "safety",
    "smoke",
    "sound",
    "tamper",
    "update",
    "vibration",
    "window",
}
STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}
_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_TOPIC = re.compile(
    r"^homeassistant/(?P<component>[a-z_]+)/(?:(?P<node>[a-zA-Z0-9_-]+)/)?"
    r"(?P<object>[a-zA-Z0-9_-]+)/config$"
)


def _url(value: Any) -> None:
    parsed = urlparse(str(value))
    assert parsed.scheme in ("http", "https", "homeassistant"), value
    assert parsed.netloc, value


def check(topic: str, config: dict[str, Any]) -> str:
    """Assert ``config`` is a valid discovery config for ``topic``; the component."""
    match = _TOPIC.match(topic)
    assert match, f"not a discovery topic: {topic}"
    component = match["component"]
    assert component in KEYS, component
    unknown = set(config) - KEYS[component]
    assert not unknown, f"{topic}: keys Home Assistant does not know: {unknown}"
    assert _ID.match(str(config["unique_id"])), config["unique_id"]
    for key in ("state_topic", "availability_topic", "value_template", "name"):
        assert isinstance(config.get(key), str), (topic, key)
        assert config[key], (topic, key)
    device = config["device"]
    assert set(device) <= DEVICE_KEYS, set(device) - DEVICE_KEYS
    assert device.get("identifiers") or device.get("connections")
    assert all(isinstance(i, str) for i in device["identifiers"])
    if "configuration_url" in device:
        _url(device["configuration_url"])
    origin = config["origin"]
    assert set(origin) <= ORIGIN_KEYS, origin
    assert origin.get("name"), origin
    if "support_url" in origin:
        _url(origin["support_url"])
    category = config.get("entity_category")
    assert category in (None, "diagnostic"), "sensors may only be diagnostic"
    device_class = config.get("device_class")
    if component == "sensor":
        unit = config.get("unit_of_measurement")
        if device_class is not None:
            assert device_class in SENSOR_UNITS, device_class
            assert unit in SENSOR_UNITS[device_class], (device_class, unit)
        state_class = config.get("state_class")
        if state_class is not None:
            assert state_class in STATE_CLASSES
            assert device_class not in NON_NUMERIC, (topic, "state_class on a non-number")
    else:
        assert device_class is None or device_class in BINARY_CLASSES, device_class
    jinja2.Environment(autoescape=False).parse(config["value_template"])
    return component


def render(config: dict[str, Any], payload: bytes | str | dict[str, Any]) -> str | None:
    """The entity's state for one message on its state topic, as Home Assistant renders
    it (None: unknown)."""
    value_json = payload if isinstance(payload, dict) else json.loads(payload)
    template = jinja2.Environment(autoescape=False).from_string(config["value_template"])
    out = template.render(value_json=value_json).strip()
    return None if out in ("None", "") else out


def check_all(messages: list[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Check every config and that unique ids are unique; topic → config."""
    for topic, config in messages:
        check(topic, config)
    ids = [c["unique_id"] for _, c in messages]
    assert len(ids) == len(set(ids)), "unique_id used twice"
    return dict(messages)
