"""``/metrics``: Prometheus text format, collected on each scrape.

Its own :class:`~prometheus_client.CollectorRegistry` (nothing global). On a scrape the
ledger is read (read-only, on a worker thread), the device board, the disk and the
certificate files looked at. Labels are state names, destination names, device names,
driver ids, device classes, alarm codes and certificate roles: never patient data or
capture ids. Names follow Prometheus's naming guide: counters end in ``_total``, units
are seconds and bytes, gauges are "now" values.

* the "now" gauges (the page's figures): :mod:`.metric_figures`;
* build info, the ledger's running totals (counters and the delivery-latency
  histogram, which survive restarts) and certificate expiry: :mod:`.metric_totals`;
* the process (``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
  ``process_start_time_seconds``, ``process_open_fds``, …): prometheus_client's
  :class:`~prometheus_client.ProcessCollector` (``/proc/self``; absent off Linux).

The full list of names is :data:`FAMILIES` (the README's table is checked against it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from gateway.core.config import DermGateConfig
from gateway.status.web.data import Figures
from gateway.status.web.metric_figures import FiguresCollector
from gateway.status.web.metric_totals import TotalsCollector

__all__ = ["CONTENT_TYPE", "FAMILIES", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Every metric family DermGate exports, with its type and labels (the README's table).
FAMILIES: dict[str, tuple[str, str]] = {
    "dermgate_up": ("gauge", ""),
    "dermgate_build_info": ("gauge", "version"),
    "dermgate_captures_received_total": ("counter", "device_class"),
    "dermgate_deliveries_sent_total": ("counter", "destination"),
    "dermgate_delivery_latency_seconds": ("histogram", "destination"),
    "dermgate_spool_captures": ("gauge", "state"),
    "dermgate_spool_quarantined_open": ("gauge", ""),
    "dermgate_delivered_captures": ("gauge", "device_class"),
    "dermgate_quarantined_captures": ("gauge", "device_class"),
    "dermgate_deliveries": ("gauge", "destination, state"),
    "dermgate_deliveries_failing": ("gauge", "destination, kind"),
    "dermgate_destination_failing": ("gauge", "destination"),
    "dermgate_oldest_waiting_seconds": ("gauge", ""),
    "dermgate_commitment_lag_seconds": ("gauge", ""),
    "dermgate_disk_free_bytes": ("gauge", ""),
    "dermgate_disk_total_bytes": ("gauge", ""),
    "dermgate_disk_reserve_bytes": ("gauge", ""),
    "dermgate_driver_state": ("gauge", "device, driver, state"),
    "dermgate_driver_restarts_total": ("counter", "device, driver"),
    "dermgate_alarm": ("gauge", "code, subject"),
    "dermgate_certificate_expiry_timestamp_seconds": ("gauge", "what, destination"),
    "dermgate_worklist_items": ("gauge", ""),
    "dermgate_worklist_age_seconds": ("gauge", ""),
    "dermgate_worklist_stale": ("gauge", ""),
    "process_cpu_seconds_total": ("counter", ""),
    "process_resident_memory_bytes": ("gauge", ""),
    "process_virtual_memory_bytes": ("gauge", ""),
    "process_start_time_seconds": ("gauge", ""),
    "process_open_fds": ("gauge", ""),
    "process_max_fds": ("gauge", ""),
}


class Metrics:
    """Renders ``/metrics``; ``figures`` reads the current :class:`Figures`."""

    def __init__(self, figures: Callable[[], Awaitable[Figures]], config: DermGateConfig) -> None:
        self._figures = figures
        self._collector = FiguresCollector()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self._collector)
        self.registry.register(TotalsCollector(config))
        ProcessCollector(registry=self.registry)
        self._lock = asyncio.Lock()

    async def render(self) -> bytes:
        """The exposition text of one scrape."""
        async with self._lock:
            self._collector.figures = await self._figures()
            return await asyncio.to_thread(generate_latest, self.registry)
