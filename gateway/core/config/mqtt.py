"""``[mqtt]``: fleet status over MQTT."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from gateway.core.config.base import Port, _Strict

_TOPIC_PART = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")


class MqttSettings(_Strict):
    """``[mqtt]``: fleet status over MQTT; absent = MQTT off.

    Topics are ``<topic_prefix>/<gateway id>/status`` (retained ``online``, and the
    retained Last Will ``offline``), ``.../state`` (retained JSON snapshot) and
    ``.../events`` (numbered events, QoS 1). TLS is used when ``tls_ca`` or
    ``tls_cert`` is set; the broker's certificate is always verified.
    """

    host: str = Field(description="Broker host name or IP address.")
    port: Port = Field(default=1883, description="Broker port (8883 is usual for TLS).")
    topic_prefix: str = Field(
        default="dermgate",
        description="First topic level(s): topics are `<topic_prefix>/<gateway id>/...`",
    )
    username: str | None = Field(default=None, description="User name at the broker.")
    password_file: Path | None = Field(
        default=None,
        description="File holding the broker password (first line); needs `username`. "
        "Kept out of the configuration so the config can be shared.",
    )
    tls_ca: Path | None = Field(
        default=None,
        description="CA certificate (PEM) that signed the broker's certificate; turns TLS on. "
        "Without it (but with `tls_cert`) the system's CAs are used.",
    )
    tls_cert: Path | None = Field(
        default=None, description="Client certificate (PEM) for brokers that require one."
    )
    tls_key: Path | None = Field(default=None, description="Private key (PEM) of `tls_cert`.")
    homeassistant_discovery: bool = Field(
        default=True,
        description="Publish Home Assistant MQTT discovery configs (retained) for the key "
        "sensors, again whenever Home Assistant announces itself on `homeassistant/status`.",
    )
    keepalive: int = Field(
        default=30,
        ge=5,
        le=3600,
        description="MQTT keepalive in seconds: a box that vanishes shows offline within "
        "about 1.5 times this.",
    )
    state_min_interval: float = Field(
        default=2.0,
        ge=0,
        description="Shortest time in seconds between two state publications (changes "
        "within it are combined into one).",
    )
    events_buffer: int = Field(
        default=1000,
        ge=1,
        description="Events kept while the broker is away; beyond it the oldest are dropped "
        "and counted (reported in the next event and in the state).",
    )
    reconnect_max: float = Field(
        default=60.0,
        ge=0.1,
        description="Longest wait in seconds between reconnection attempts (jittered).",
    )

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _TOPIC_PART.match(value):
            raise ValueError(
                "use letters, digits, '_' or '-' in levels separated by '/' "
                "(no wildcards, no leading or trailing '/')"
            )
        return value

    @model_validator(mode="after")
    def _pairs(self) -> MqttSettings:
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs username")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self

    @property
    def tls(self) -> bool:
        """Whether the connection uses TLS."""
        return self.tls_ca is not None or self.tls_cert is not None
