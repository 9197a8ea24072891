"""A barcode scan opens the device's patient session in the running service.

``dermgate run`` with a serial scanner in ``[[barcodes]]`` (a pty in this process
plays the scanner, as a USB-CDC scanner would appear) and a worklist item in the
ledger's cache (as a refresh leaves it). Scanning the order's accession number
opens a session on the dermatoscope: the ledger, the MQTT state and the logged-in
page show it, and the next capture from the device's simulator reaches a real
Orthanc under the worklist's patient, study and accession number. A code that
matches no pattern opens nothing: the page shows it on the device's card (to a
logged-in user only) and MQTT gets a ``no_match`` scan; so does an accession number
no order has (``refused``, in the context stage's words). No code ever reaches the
log or MQTT.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from drivers.serial_dermatoscope.pty_link import PtyLink
from gateway.demo.local_orthanc import OrthancProcess, free_port
from gateway.service.config import load_config
from gateway.spool import worklist_cache
from gateway.spool.schema import open_ledger
from tests.support.context import item
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.mqtt import Mosquitto, Recorder
from tests.support.simulator import SimulatorProcess
from tests.support.waiting import wait_for
from tests.support.web import login, user_add

STATE = "dermgate/test-box-01/state"
EVENTS = "dermgate/test-box-01/events"
STUDY = "1.2.826.0.1.3680043.8.498.3001"
ITEM = item(1, patient_id="MRN-3001", name="Nakamura^Hana", accession="ACC-3001", study_uid=STUDY)
MISMATCH = "HELLO-42"
UNKNOWN = "ACC-9999"
SECRETS = ("MRN-3001", "Nakamura", "Hana", "ACC-3001", MISMATCH, UNKNOWN)


def _sessions(state_dir: Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(f"file:{state_dir / 'ledger.sqlite3'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM sessions ORDER BY id").fetchall()
    finally:
        conn.close()


def _scans(rec: Recorder) -> list[dict[str, Any]]:
    return [m.json() for m in rec.on(EVENTS) if m.json()["kind"] == "barcode_scanned"]


def _scope_session(rec: Recorder) -> Any:
    states = rec.on(STATE)
    if not states:
        return None
    devices = {d["name"]: d for d in states[-1].json().get("devices", [])}
    return devices.get("scope", {}).get("session")


async def _overview(base: str, *, log_in: bool = True) -> str:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        if log_in:
            assert (await login(session, base)).status == 200
        async with session.get(f"{base}/") as page:
            return await page.text()


def _card(html: str, device: str) -> str:
    start = html.index(f'data-device="{device}"')
    return html[start : html.index("</div>", html.index("</h4>", start))]


def test_a_scanned_accession_number_opens_the_session_its_captures_arrive_in(
    tmp_path: Path,
    orthanc: OrthancProcess,
    mosquitto: Mosquitto,
    recorder_factory: Callable[..., Recorder],
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    scanner = PtyLink(tmp_path / "ttyScan0")
    scanner.open()
    path = gateway_config(tmp_path, pacs_port=orthanc.dicom_port, hold_unidentified=600)
    web_port = free_port()
    with path.open("a", encoding="utf-8") as fh:
        fh.write(
            f"""
[[barcodes]]
port = "{scanner.path}"
for_device = "scope"
pattern = '^(?P<accession_number>ACC-\\d{{4}})$'

[web]
listen = "127.0.0.1:{web_port}"

{mosquitto.config_section()}"""
        )
    user_add(path, "tech", "correct horse battery")
    base = f"http://127.0.0.1:{web_port}"
    config = load_config(path)
    config.gateway.state_dir.mkdir(parents=True, exist_ok=True)  # user add made it
    conn = open_ledger(config.ledger_path())  # the worklist cache, as a refresh left it
    try:
        worklist_cache.replace_items(conn, [ITEM], source_ae="RIS", now=0.0)
    finally:
        conn.close()
    rec = recorder_factory(mosquitto, [STATE, EVENTS])
    gateway = gateway_factory(path)
    try:
        wait_for(lambda: "barcodes[0]: scanner connected" in gateway.log(), 60, "the scanner")
        assert scanner.master is not None
        os.write(scanner.master, b"ACC-3001\r\n")
        rec.wait(lambda: _scans(rec), 30, "a barcode_scanned event")
        assert [(e["scanner"], e["device"], e["outcome"]) for e in _scans(rec)] == [
            ("barcodes[0]", "scope", "matched")
        ]
        [session] = _sessions(config.gateway.state_dir)
        assert session["device"] == "scope"
        assert session["source"] == "worklist"
        assert session["worklist_key"] == ITEM.key
        assert session["opened_by"] == "barcode:barcodes[0]"
        assert session["closed_at"] is None
        rec.wait(lambda: _scope_session(rec) == session["id"], 30, "the session in the state")
        card = _card(asyncio.run(_overview(base)), "scope")
        assert "Nakamura, Hana" in card
        assert "Scan not used" not in card

        sim = simulator_factory("--captures", "1", "--interval", "0.2")
        assert sim.wait(180) == 0
        wait_for(lambda: orthanc.count_instances() == 1, 120, "the capture in Orthanc")
        [patient] = orthanc.rest("GET", "/patients?expand")
        assert patient["MainDicomTags"]["PatientID"] == "MRN-3001"
        assert patient["MainDicomTags"]["PatientName"] == "Nakamura^Hana"
        [study_id] = patient["Studies"]
        tags = orthanc.rest("GET", f"/studies/{study_id}")["MainDicomTags"]
        assert tags["StudyInstanceUID"] == STUDY
        assert tags["AccessionNumber"] == "ACC-3001"

        os.write(scanner.master, MISMATCH.encode() + b"\r\n")
        rec.wait(lambda: len(_scans(rec)) == 2, 30, "the second barcode_scanned event")
        assert _scans(rec)[1]["outcome"] == "no_match"
        assert [s["id"] for s in _sessions(config.gateway.state_dir)] == [session["id"]]
        assert "barcodes[0]: scan for scope not used: no_match" in gateway.log()
        card = _card(asyncio.run(_overview(base)), "scope")
        assert "Nakamura, Hana" in card, "the session the scan opened is still the one shown"
        assert (
            f"Scan not used (it does not fit this scanner&#x27;s pattern): <b>{MISMATCH}</b>"
            in card
        )
        assert MISMATCH not in asyncio.run(_overview(base, log_in=False)), "shown to a login only"

        os.write(scanner.master, UNKNOWN.encode() + b"\r\n")  # fits, but no order has it
        rec.wait(lambda: len(_scans(rec)) == 3, 30, "the third barcode_scanned event")
        assert _scans(rec)[2]["outcome"] == "refused"
        card = _card(asyncio.run(_overview(base)), "scope")
        assert f"Scan not used (no worklist item matches): <b>{UNKNOWN}</b>" in card
        assert "Nakamura, Hana" in card, "a refused scan leaves the session as it was"
    finally:
        gateway.stop()
        scanner.close()
    published = "\n".join(json.dumps(m.json()) for m in rec.all() if m.topic.startswith("derm"))
    log = gateway.log()
    for secret in SECRETS:
        assert secret not in log, f"{secret} in the log"
        assert secret not in published, f"{secret} on MQTT"
