"""/metrics is Prometheus text with the documented families, and nothing private."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gateway.spool.ledger import open_ledger
from gateway.status.web.metrics import FAMILIES
from gateway.status.web.server import WebServer
from tests.support.web import served, web_config

#: The families of a box without [worklist] or certificates (see FAMILIES for all).
EXPECTED = {
    name
    for name in FAMILIES
    if not name.startswith("dermgate_worklist")
    and name != "dermgate_certificate_expiry_timestamp_seconds"
}


def test_metrics_parse_and_name_the_documented_families(tmp_path: Path) -> None:
    config = web_config(tmp_path)
    open_ledger(config.ledger_path()).close()

    async def snapshot() -> dict[str, object]:
        return {
            "devices": [{"name": "scope", "driver": "serial-dermatoscope", "state": "READY",
                         "restarts": 2}],
            "destinations": [{"name": "pacs", "reachable": False,
                              "last_error": {"code": "unreachable", "message": "x"}}],
            "alarms": [],
        }  # fmt: skip

    async def scenario() -> str:
        async with served(WebServer(config, snapshot)) as (base, session):
            r = await session.get(f"{base}/metrics")
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return await r.text()

    text = asyncio.run(scenario())
    families = {f.name: f for f in text_string_to_metric_families(text)}
    exported = {f.name + ("_total" if f.type == "counter" else "") for f in families.values()}
    assert exported >= EXPECTED
    assert {n: (families[n.removesuffix("_total")].type) for n in EXPECTED} == {
        n: FAMILIES[n][0] for n in EXPECTED
    }
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert samples[("dermgate_up", ())] == 1
    assert samples[("dermgate_spool_captures", (("state", "QUARANTINED"),))] == 0
    key = ("dermgate_driver_state", (("device", "scope"), ("driver", "serial-dermatoscope"),
                                      ("state", "READY")))  # fmt: skip
    assert samples[key] == 1
    assert samples[("dermgate_destination_failing", (("destination", "pacs"),))] == 1
    assert samples[("dermgate_disk_reserve_bytes", ())] == 128 * 1024 * 1024


def test_worklist_figures_are_counts_and_age_only(tmp_path: Path) -> None:
    config = web_config(tmp_path)
    open_ledger(config.ledger_path()).close()
    section: dict[str, object] = {"configured": False}

    async def snapshot() -> dict[str, object]:
        return {"devices": [], "destinations": [], "alarms": [], "worklist": section}

    async def scrape() -> dict[str, float]:
        async with served(WebServer(config, snapshot)) as (base, session):
            text = await (await session.get(f"{base}/metrics")).text()
        return {
            s.name: s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name.startswith("dermgate_worklist")
        }

    assert asyncio.run(scrape()) == {}  # no [worklist]: no worklist families
    section.update(
        configured=True, items=7, age_s=1234.5, stale=True, truncated=False, last_error="x"
    )
    assert asyncio.run(scrape()) == {
        "dermgate_worklist_items": 7,
        "dermgate_worklist_age_seconds": 1234.5,
        "dermgate_worklist_stale": 1,
    }
