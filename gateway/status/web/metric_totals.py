"""The running totals, build and certificate families of ``/metrics``.

* ``dermgate_build_info{version}`` 1;
* counters read from the ledger (:mod:`gateway.spool.history`: they survive restarts and
  never go down): ``dermgate_captures_received_total{device_class}``,
  ``dermgate_deliveries_sent_total{destination}``, and the histogram
  ``dermgate_delivery_latency_seconds{destination}`` (capture received → confirmed by
  the destination, for destinations that confirm);
* ``dermgate_certificate_expiry_timestamp_seconds{what,destination}``: when each
  certificate the box presents or trusts expires (Unix time; read with ``openssl x509``
  once per file change, not on every scrape).

Blocking (ledger, files, a subprocess): collected on the scrape's worker thread.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gateway.core.config import DermGateConfig
from gateway.spool.history import (
    LATENCY_BUCKETS,
    DeliveryHistory,
    LatencyHistogram,
    LatencyTally,
    delivery_history,
)
from gateway.spool.ledger import open_ledger
from gateway.status.checks.certificates import certificate_not_after

__all__ = [
    "CertificateFile",
    "TotalsCollector",
    "build_version",
    "certificate_files_of",
    "certificate_not_after",
]


def build_version() -> str:
    """The installed DermGate's version (``unknown`` when run from an uninstalled tree)."""
    try:
        return version("dermgate")
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True, slots=True)
class CertificateFile:
    """A certificate the box uses: ``what`` it is for, the ``destination`` it belongs to
    (empty for the box's own), and its file."""

    what: str
    destination: str
    path: Path


def certificate_files_of(config: DermGateConfig) -> list[CertificateFile]:
    """Every certificate file in the configuration (the page's, MQTT's, DICOM TLS's and
    the DICOMweb stores' CAs), as the checks list them."""
    found: list[CertificateFile] = []
    if config.web is not None and config.web.tls_cert is not None:
        found.append(CertificateFile("web", "", config.web.tls_cert))
    if config.mqtt is not None:
        if config.mqtt.tls_cert is not None:
            found.append(CertificateFile("mqtt_client", "", config.mqtt.tls_cert))
        if config.mqtt.tls_ca is not None:
            found.append(CertificateFile("mqtt_ca", "", config.mqtt.tls_ca))
    for d in config.dicom_destinations():
        if d.tls_ca is not None:
            found.append(CertificateFile("destination_ca", d.name, d.tls_ca))
        if d.tls_cert is not None:
            found.append(CertificateFile("destination_client", d.name, d.tls_cert))
    for w in config.dicomweb_destinations():
        if w.tls_ca is not None:
            found.append(CertificateFile("destination_ca", w.name, w.tls_ca))
    g = config.gateway
    if g.listen_tls_cert is not None:
        found.append(CertificateFile("listener", "", g.listen_tls_cert))
    if g.listen_tls_ca is not None:
        found.append(CertificateFile("listener_ca", "", g.listen_tls_ca))
    return found


class TotalsCollector(Collector):
    """Build info, the ledger's totals and the certificates' expiry, on each scrape."""

    def __init__(self, config: DermGateConfig) -> None:
        self.config = config
        self.version = build_version()
        self._expiry: dict[Path, tuple[tuple[int, int], float | None]] = {}
        self._tally = LatencyTally()

    def collect(self) -> Iterator[Metric]:
        """The families (blocking: the ledger, certificate files)."""
        info = GaugeMetricFamily(
            "dermgate_build_info", "DermGate's version (always 1)", labels=["version"]
        )
        info.add_metric([self.version], 1)
        yield info
        yield from self._totals()
        yield self._certificates()

    def _history(self) -> DeliveryHistory:
        destinations = [(d.name, d.confirms) for d in self.config.destinations]
        path = self.config.ledger_path()
        if not path.exists():
            return delivery_history_empty(destinations)
        conn = open_ledger(path, readonly=True)
        try:
            return delivery_history(conn, destinations, self._tally)
        finally:
            conn.close()

    def _totals(self) -> Iterator[Metric]:
        history = self._history()
        received = CounterMetricFamily(
            "dermgate_captures_received",
            "Captures received from devices and kept in the spool, by device class",
            labels=["device_class"],
        )
        for cls, n in sorted(history.received_by_class.items()):
            received.add_metric([cls], n)
        yield received
        sent = CounterMetricFamily(
            "dermgate_deliveries_sent",
            "Deliveries the destination accepted (stored), by destination",
            labels=["destination"],
        )
        for name, n in history.sent.items():
            sent.add_metric([name], n)
        yield sent
        latency = HistogramMetricFamily(
            "dermgate_delivery_latency_seconds",
            "Seconds from a capture's arrival to its confirmation by the destination "
            "(destinations that confirm: Storage Commitment or read-back)",
            labels=["destination"],
        )
        for name, h in history.latency.items():
            buckets = [
                (repr(float(b)), float(n)) for b, n in zip(LATENCY_BUCKETS, h.buckets, strict=True)
            ]
            latency.add_metric([name], [*buckets, ("+Inf", float(h.count))], h.total_seconds)
        yield latency

    def _certificates(self) -> Metric:
        family = GaugeMetricFamily(
            "dermgate_certificate_expiry_timestamp_seconds",
            "When a certificate the box presents or trusts expires (Unix time; absent "
            "when it cannot be read)",
            labels=["what", "destination"],
        )
        for cert in certificate_files_of(self.config):
            expiry = self._expires(cert.path)
            if expiry is not None:
                family.add_metric([cert.what, cert.destination], expiry)
        return family

    def _expires(self, path: Path) -> float | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        known = self._expiry.get(path)
        if known is not None and known[0] == stamp:
            return known[1]
        try:
            expiry: float | None = certificate_not_after(path)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            expiry = None
        self._expiry[path] = (stamp, expiry)
        return expiry


def delivery_history_empty(destinations: list[tuple[str, bool]]) -> DeliveryHistory:
    """The totals of a box without a ledger yet: all zero."""
    zero = LatencyHistogram((0,) * len(LATENCY_BUCKETS), 0, 0.0)
    return DeliveryHistory(
        {}, {n: 0 for n, _ in destinations}, {n: zero for n, c in destinations if c}
    )
