"""Routing: which destinations a capture goes to, and at which priority.

Pure decisions over ``[[routes]]`` (:mod:`gateway.core.config.routes`, where the
semantics are written down); the spool applies them when it creates deliveries
(:mod:`gateway.spool.routing`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.core.config import DermGateConfig
from gateway.core.config.routes import PRIORITY_NORMAL, RouteSettings

__all__ = ["CaptureFacts", "RoutePlan"]


@dataclass(frozen=True, slots=True)
class CaptureFacts:
    """What routes look at: no patient data."""

    device_class: str | None
    driver: str
    device: str | None
    sop_class_uid: str | None
    sensitive: bool


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """The configured destinations (by name, in order) and the ``[[routes]]`` over them."""

    destinations: tuple[str, ...]
    routes: tuple[RouteSettings, ...] = ()

    @classmethod
    def from_config(cls, config: DermGateConfig) -> RoutePlan:
        """The plan of a configuration file."""
        return cls(tuple(d.name for d in config.destinations), tuple(config.routes))

    @classmethod
    def of(cls, value: RoutePlan | Iterable[str]) -> RoutePlan:
        """``value`` itself, or every destination of a list of names with no routes."""
        return value if isinstance(value, RoutePlan) else cls(tuple(value))

    def targets(self, facts: CaptureFacts) -> dict[str, int]:
        """Destination name → delivery priority for a capture with ``facts``.

        Empty when no route matches it (and with no destinations at all).
        """
        if not self.routes:
            return dict.fromkeys(self.destinations, PRIORITY_NORMAL)
        chosen: dict[str, int] = {}
        for route in self.routes:
            if not route.match.matches(
                device_class=facts.device_class,
                driver=facts.driver,
                device=facts.device,
                sop_class_uid=facts.sop_class_uid,
                sensitive=facts.sensitive,
            ):
                continue
            for name in route.to:
                if (
                    name in self.destinations
                ):  # the config checks this; a plan built by hand may not
                    chosen[name] = max(chosen.get(name, PRIORITY_NORMAL), route.priority_value())
        return {name: chosen[name] for name in self.destinations if name in chosen}
