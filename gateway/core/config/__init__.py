"""The configuration models: typed DermGate configuration, read from one TOML file.

These are the models only, low in the layers so that every stage can take its own
section; reading a file (which needs the driver registry to check device options)
is :mod:`gateway.service.config`.

Every key is documented here, in its ``Field`` description (and, for a section, in
:class:`DermGateConfig`'s field for it); README.md's reference tables are generated
from these by ``scripts/config_reference.py``. Unknown keys are rejected with a
message naming the key and the file, so a typo never silently falls back to a
default. Device options are validated by the driver's own options model.

Example::

    [gateway]
    id = "derm-box-01"
    ae_title = "DERMGATE"
    listen_port = 11113
    state_dir = "/var/lib/dermgate"

    [[destinations]]
    name = "pacs"
    kind = "dicom"
    ae_title = "ORTHANC"
    host = "127.0.0.1"
    port = 4242
    storage_commitment = true

    [[devices]]
    driver = "serial-dermatoscope"
    port = "/dev/ttyACM0"

    [supervision]          # optional: crashed/hung drivers (defaults shown)
    quarantine_after = 5
    quarantine_window = 600
    hang_timeout = 120

    [web]                  # optional: the local page (absent = no page)
    listen = "127.0.0.1:8080"

    [hotplug]              # optional: start drivers when their device appears
    source = "udev"

    [[devices]]
    driver = "serial-dermatoscope"
    hotplug = true
    port = "{devnode}"
"""

from __future__ import annotations

from gateway.core.config.base import AETitle, ConfigError, Port, default_gateway_id
from gateway.core.config.box import (
    GatewaySettings,
    HotplugSettings,
    SpoolSettings,
    SupervisionSettings,
)
from gateway.core.config.destinations import (
    Destination,
    DestinationBase,
    DicomDestination,
    DicomwebDestination,
)
from gateway.core.config.devices import DeviceSettings
from gateway.core.config.file import DermGateConfig
from gateway.core.config.mqtt import MqttSettings
from gateway.core.config.routes import RouteMatch, RouteSettings
from gateway.core.config.web import WebSettings

__all__ = [
    "AETitle",
    "ConfigError",
    "DermGateConfig",
    "Destination",
    "DestinationBase",
    "DeviceSettings",
    "DicomDestination",
    "DicomwebDestination",
    "GatewaySettings",
    "HotplugSettings",
    "MqttSettings",
    "Port",
    "RouteMatch",
    "RouteSettings",
    "SpoolSettings",
    "SupervisionSettings",
    "WebSettings",
    "default_gateway_id",
]
