"""/metrics's running totals come from the ledger: counters that survive a restart, and a
delivery-latency histogram (capture received → confirmed) per confirming destination.

A real ledger is filled through the spool's own functions (insert, sent, confirmed);
only the arrival time of a capture is set back, to stand for one that came earlier.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from pydicom.uid import ExplicitVRLittleEndian

from gateway.core.capture import CaptureOffer, DeviceIdentity, InstanceUIDs
from gateway.core.config import DermGateConfig
from gateway.demo.local_orthanc import free_port
from gateway.service.config import parse_config
from gateway.spool import ledger as db
from gateway.spool.history import LATENCY_BUCKETS, LatencyTally, delivery_history
from gateway.spool.readback import commit_delivery
from gateway.status.web.server import WebServer
from tests.support.web import self_signed, served

_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.4"
_HISTOGRAM = "dermgate_delivery_latency_seconds"


def _config(tmp_path: Path, web_keys: str = "") -> DermGateConfig:
    text = f"""
[gateway]
id = "metrics-test"
state_dir = "{tmp_path / "state"}"
listen_address = "127.0.0.1"
listen_port = {free_port()}

[[destinations]]
name = "pacs"
kind = "dicom"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = {free_port()}

[[destinations]]
name = "archive"
kind = "dicom"
ae_title = "ARCHIVE"
host = "127.0.0.1"
port = {free_port()}
storage_commitment = false

[web]
listen = "127.0.0.1:{free_port()}"
{web_keys}
"""
    path = tmp_path / "dermgate.toml"
    path.write_text(text, encoding="utf-8")
    return parse_config(text, path)


def _capture(conn: sqlite3.Connection, n: int, arrived: timedelta) -> int:
    """A wrapped capture for both destinations that arrived ``arrived`` ago."""
    uids = InstanceUIDs(f"1.2.3.{n}.1", f"1.2.3.{n}.2", f"1.2.3.{n}.3")
    spool_id = db.insert_capture(
        conn,
        driver="serial-dermatoscope",
        device=DeviceIdentity("Acme", "Scope", f"SN{n}", ("1.0",)),
        offer=CaptureOffer(device_capture_id=f"c{n}"),
        uids=uids,
        raw_name="",
        raw_size=1,
        raw_sha256="0" * 64,
        wrapped=db.WrappedAtIntake(f"{n}.dcm", _CLASS, ExplicitVRLittleEndian, ("pacs", "archive")),
    )
    stamp = (datetime.now(UTC) - arrived).isoformat(timespec="milliseconds")
    conn.execute("UPDATE captures SET received_at = ? WHERE id = ?", (stamp, spool_id))
    conn.commit()
    return spool_id


def _scrape(config: DermGateConfig) -> str:
    async def snapshot() -> dict[str, object]:
        return {"devices": [], "destinations": [], "alarms": []}

    async def run() -> str:
        async with (
            served(WebServer(config, snapshot)) as (base, session),
            session.get(f"{base}/metrics") as r,
        ):
            assert r.status == 200
            return await r.text()

    return asyncio.run(run())


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_latency_histogram_and_counters_come_from_the_ledger_and_survive_a_restart(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    conn = db.open_ledger(config.ledger_path())
    arrivals = {
        1: timedelta(seconds=0),  # confirmed at once
        2: timedelta(minutes=90),  # confirmed after an hour and a half
        3: timedelta(days=3),  # waited over a long weekend
        4: timedelta(hours=-1),  # the clock was set back since: counts as 0 s
    }
    ids = {n: _capture(conn, n, ago) for n, ago in arrivals.items()}
    for n, spool_id in ids.items():
        db.record_sent(conn, spool_id, "pacs")
        db.record_sent(conn, spool_id, "archive")
        if n != 4:
            assert commit_delivery(conn, spool_id, "pacs")
    unconfirmed = _capture(conn, 5, timedelta(minutes=1))
    db.record_sent(conn, unconfirmed, "pacs")
    conn.close()

    first = _samples(_scrape(config))
    second = _samples(_scrape(config))  # a new server on the same ledger: a restart
    for samples in (first, second):
        pacs = (("destination", "pacs"),)
        assert samples[(f"{_HISTOGRAM}_count", pacs)] == 3
        bucket = {
            le: samples[(f"{_HISTOGRAM}_bucket", (("destination", "pacs"), ("le", le)))]
            for le in ("5.0", "3600.0", "7200.0", "172800.0", "604800.0", "+Inf")
        }
        assert bucket == {
            "5.0": 1,
            "3600.0": 1,
            "7200.0": 2,
            "172800.0": 2,
            "604800.0": 3,
            "+Inf": 3,
        }
        total = samples[(f"{_HISTOGRAM}_sum", pacs)]
        assert 5400 + 3 * 86400 <= total < 5400 + 3 * 86400 + 120
        # A destination without confirmation has no latency, only deliveries sent.
        assert not any(k[0].startswith(_HISTOGRAM) and ("destination", "archive") in k[1]
                       for k in samples)  # fmt: skip
        assert samples[("dermgate_deliveries_sent_total", pacs)] == 5
        assert samples[("dermgate_deliveries_sent_total", (("destination", "archive"),))] == 4
        received = ("dermgate_captures_received_total", (("device_class", "dermatoscope"),))
        assert samples[received] == 5


def test_exposition_passes_promtool_with_build_process_and_certificate_metrics(
    tmp_path: Path,
) -> None:
    cert, key = self_signed(tmp_path)
    config = _config(tmp_path, f'tls_cert = "{cert}"\ntls_key = "{key}"')
    db.open_ledger(config.ledger_path()).close()
    text = _scrape(config)
    lint = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    samples = _samples(text)
    info = {k: v for k, v in samples.items() if k[0] == "dermgate_build_info"}
    assert info == {("dermgate_build_info", (("version", version("dermgate")),)): 1}
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_start_time_seconds", "process_open_fds"):  # fmt: skip
        assert samples[(name, ())] > 0
    expiry = samples[
        ("dermgate_certificate_expiry_timestamp_seconds", (("destination", ""), ("what", "web")))
    ]
    days = (expiry - datetime.now(UTC).timestamp()) / 86400
    assert 29 < days <= 30, "self_signed makes a 30-day certificate"


def test_the_tally_adds_new_confirmations_and_rereads_when_the_clock_went_back(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    conn = db.open_ledger(config.ledger_path())
    first, second, third = (_capture(conn, n, timedelta(minutes=n)) for n in (1, 2, 3))
    for spool_id in (first, second, third):
        db.record_sent(conn, spool_id, "pacs")
    tally = LatencyTally()
    assert commit_delivery(conn, first, "pacs")
    assert delivery_history(conn, [("pacs", True)], tally).latency["pacs"].count == 1
    assert commit_delivery(conn, second, "pacs")
    seen = delivery_history(conn, [("pacs", True)], tally).latency["pacs"]
    assert seen.count == 2
    assert seen.buckets[LATENCY_BUCKETS.index(60.0)] == 0
    assert seen.buckets[LATENCY_BUCKETS.index(300.0)] == 2
    # The clock was set back before the third confirmation: its stamp is older than
    # the newest already counted, and it must still be counted, once.
    assert commit_delivery(conn, third, "pacs")
    earlier = (datetime.now(UTC) - timedelta(minutes=10)).isoformat(timespec="milliseconds")
    conn.execute("UPDATE deliveries SET committed_at = ? WHERE capture_id = ?", (earlier, third))
    conn.commit()
    again = delivery_history(conn, [("pacs", True)], tally).latency["pacs"]
    assert again.count == 3
    assert again == delivery_history(conn, [("pacs", True)]).latency["pacs"], "as read whole"
    conn.close()
