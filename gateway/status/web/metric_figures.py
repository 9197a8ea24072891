"""The "now" gauges of ``/metrics``: the figures the page shows (ledger, disk, devices,
alarms, worklist), as one :class:`FiguresCollector` filled before each scrape.

Labels are state names, destination names, device names, driver ids, device classes
and alarm codes: never patient data or capture ids. The one counter here is
``dermgate_driver_restarts_total`` (restarts since the service started: a counter that
starts again at 0 with the service, as Prometheus expects of a process's counters).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.devices.contract import DriverState
from gateway.status.web.data import Figures

__all__ = ["FiguresCollector"]


class FiguresCollector(Collector):
    """The gauges of one scrape, from the :class:`Figures` it was handed."""

    def __init__(self) -> None:
        self.figures: Figures | None = None

    def collect(self) -> Iterator[Metric]:
        fig = self.figures
        up = GaugeMetricFamily("dermgate_up", "1 while the gateway runs")
        up.add_metric([], 1)
        yield up
        if fig is None:
            return
        g = GaugeMetricFamily("dermgate_spool_captures", "Captures by state", labels=["state"])
        for state, n in sorted(fig.counts.items()):
            g.add_metric([state], n)
        yield g
        yield GaugeMetricFamily(
            "dermgate_spool_quarantined_open",
            "Quarantined captures not resolved by a technician",
            value=fig.quarantined_open,
        )
        for name, helptext, data in (
            (
                "dermgate_delivered_captures",
                "Captures delivered now (sent or confirmed), by device class",
                fig.delivered_by_class,
            ),
            (
                "dermgate_quarantined_captures",
                "Captures quarantined now, by device class",
                fig.quarantined_by_class,
            ),
        ):
            g = GaugeMetricFamily(name, helptext, labels=["device_class"])
            for cls, n in sorted(data.items()):
                g.add_metric([cls], n)
            yield g
        deliveries = GaugeMetricFamily(
            "dermgate_deliveries",
            "Deliveries now, by destination and state",
            labels=["destination", "state"],
        )
        failures = GaugeMetricFamily(
            "dermgate_deliveries_failing",
            "Deliveries failing now, by destination and kind (retrying, refused)",
            labels=["destination", "kind"],
        )
        failing = GaugeMetricFamily(
            "dermgate_destination_failing",
            "1 if the last attempt to a destination failed",
            labels=["destination"],
        )
        for d in fig.destinations:
            for state, n in (
                ("PENDING", d.pending),
                ("SENT", d.sent),
                ("COMMITTED", d.committed),
                ("FAILED", d.refused),
            ):
                deliveries.add_metric([d.name, state], n)
            failures.add_metric([d.name, "retrying"], d.retrying)
            failures.add_metric([d.name, "refused"], d.refused)
            failing.add_metric([d.name], 1 if d.failing else 0)
        yield deliveries
        yield failures
        yield failing
        yield GaugeMetricFamily(
            "dermgate_oldest_waiting_seconds",
            "Age of the oldest capture not yet sent (0: none)",
            value=fig.oldest_waiting_age or 0.0,
        )
        yield GaugeMetricFamily(
            "dermgate_commitment_lag_seconds",
            "Age of the oldest instance sent but not yet confirmed (0: none)",
            value=fig.commitment_lag or 0.0,
        )
        yield GaugeMetricFamily(
            "dermgate_disk_free_bytes", "Free bytes on the spool's filesystem", value=fig.disk.free
        )
        yield GaugeMetricFamily(
            "dermgate_disk_total_bytes", "Size of the spool's filesystem", value=fig.disk.total
        )
        yield GaugeMetricFamily(
            "dermgate_disk_reserve_bytes", "Configured free-space reserve", value=fig.disk.reserve
        )
        states = GaugeMetricFamily(
            "dermgate_driver_state",
            "1 for the current state of each device's driver",
            labels=["device", "driver", "state"],
        )
        restarts = CounterMetricFamily(
            "dermgate_driver_restarts",
            "Driver restarts after crashes or hangs since the service started",
            labels=["device", "driver"],
        )
        for dev in fig.devices:
            name, driver = str(dev.get("name")), str(dev.get("driver"))
            for state in DriverState:
                states.add_metric(
                    [name, driver, str(state)], 1 if str(dev.get("state")) == str(state) else 0
                )
            restarts.add_metric([name, driver], int(dev.get("restarts") or 0))
        yield states
        yield restarts
        alarms = GaugeMetricFamily(
            "dermgate_alarm", "1 for each active alarm", labels=["code", "subject"]
        )
        for alarm in fig.alarms:
            alarms.add_metric([str(alarm.get("code")), str(alarm.get("subject") or "")], 1)
        yield alarms
        yield from _worklist(fig.worklist)


def _worklist(section: dict[str, Any]) -> Iterator[Metric]:
    """The worklist cache's figures (counts and age: the state document's section)."""
    if not section.get("configured"):
        return
    yield GaugeMetricFamily(
        "dermgate_worklist_items", "Items in the worklist cache", value=int(section["items"])
    )
    if section.get("age_s") is not None:
        yield GaugeMetricFamily(
            "dermgate_worklist_age_seconds",
            "Seconds since the last successful worklist refresh",
            value=float(section["age_s"]),
        )
    yield GaugeMetricFamily(
        "dermgate_worklist_stale",
        "1 when the worklist cache is stale (no successful refresh lately)",
        value=1 if section.get("stale") else 0,
    )
