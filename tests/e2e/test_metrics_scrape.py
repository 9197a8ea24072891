"""A running ``dermgate run`` exports what docs/monitoring/ relies on, in a form promtool
accepts, and its delivery totals survive a restart.

Two captures from the serial simulator go to a pynetdicom PACS that stores and confirms
(Storage Commitment report on a new association). The page runs over TLS (so the
certificate expiry gauge has a certificate to report). ``/metrics`` is scraped as
Prometheus would: ``promtool check metrics`` lints it, every metric the alert rules and
the Grafana dashboard use is there, the histogram counts both confirmations; after a
restart the counters and the histogram read the same.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.demo.local_orthanc import free_port
from gateway.status.web.metrics import FAMILIES
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.monitoring import dashboard_expressions, metric_names, rule_expressions
from tests.support.peers import MisbehavingPacs
from tests.support.simulator import SimulatorProcess
from tests.support.state import states
from tests.support.waiting import wait_for
from tests.support.web import client_tls, self_signed

HISTOGRAMS = {name for name, (kind, _) in FAMILIES.items() if kind == "histogram"}
_TOTALS = (
    "dermgate_delivery_latency_seconds",
    "dermgate_deliveries_sent",
    "dermgate_captures_received",
)


def _scrape(base: str, cert: Path) -> str | None:
    async def get() -> str | None:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{base}/metrics", ssl=client_tls(cert)) as r,
            ):
                return await r.text() if r.status == 200 else None
        except aiohttp.ClientError:
            return None

    return asyncio.run(get())


def _exported(text: str) -> set[str]:
    """The family names as Prometheus stores them (counters with ``_total``)."""
    return {
        f.name + ("_total" if f.type == "counter" else "")
        for f in text_string_to_metric_families(text)
    }


def _totals(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        if f.name in _TOTALS
        for s in f.samples
    }


def test_a_running_box_exports_what_the_rules_and_dashboard_use(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    pacs.start()
    cert, key = self_signed(tmp_path)
    web_port = free_port()
    config = gateway_config(
        tmp_path, pacs_port=pacs.port, pacs_ae="MISBEHAVE", listen_port=pacs.report_to
    )
    with config.open("a", encoding="utf-8") as fh:
        fh.write(
            f'\n[web]\nlisten = "127.0.0.1:{web_port}"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
        )
    base = f"https://127.0.0.1:{web_port}"
    sim = simulator_factory("--captures", "2", "--interval", "0.1")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0
    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["COMMITTED", "COMMITTED"], 90, "both confirmed")

    text = _scrape(base, cert)
    assert text is not None
    lint = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr

    used = metric_names([*rule_expressions().values(), *dashboard_expressions()], HISTOGRAMS)
    missing = used - {"up"} - _exported(text)  # up: Prometheus's own, per target
    assert not missing, f"used by docs/monitoring but not exported: {sorted(missing)}"

    totals = _totals(text)
    pacs_label = (("destination", "pacs"),)
    assert totals[("dermgate_delivery_latency_seconds_count", pacs_label)] == 2
    assert totals[("dermgate_delivery_latency_seconds_bucket", (*pacs_label, ("le", "+Inf")))] == 2
    assert 0 < totals[("dermgate_delivery_latency_seconds_sum", pacs_label)] < 600
    assert totals[("dermgate_deliveries_sent_total", pacs_label)] == 2
    assert totals[("dermgate_captures_received_total", (("device_class", "dermatoscope"),))] == 2

    # A restart: the totals come back from the ledger, not from zero.
    assert gateway.stop() == 0
    gateway = gateway_factory(config)
    wait_for(lambda: _scrape(base, cert) is not None, 90, "/metrics after the restart")
    after = _scrape(base, cert)
    assert after is not None
    assert _totals(after) == totals
    assert gateway.stop() == 0
