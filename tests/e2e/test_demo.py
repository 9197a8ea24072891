"""``dermgate demo --captures N``: the embedded default, exactly as a newcomer runs it.

All four simulated devices (serial dermatoscope, USB confocal microscope, 3D scanner
export folder, camera photo folder) deliver through one gateway into one Orthanc,
and the technician's page is served with the one-time login the demo prints.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import aiohttp
import paho.mqtt.client as paho

from gateway.demo.local_orthanc import OrthancProcess
from tests.support.web import login


async def _log_in(base: str, password: str) -> str:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        for _ in range(300):  # the page starts with the gateway, after the banner
            try:
                async with session.get(f"{base}/healthz") as health:
                    assert (await health.text()).strip() == "ok"
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the page never answered /healthz")
        wrong = await login(session, base, user="demo", password=password + "x")
        assert "/login" in str(wrong.url), "a wrong password does not get in"
        response = await login(session, base, user="demo", password=password)
        assert response.status == 200
        return await response.text()


def _retained_status(port: int, topic: str) -> str:
    """The retained payload on ``topic`` of the demo's broker (waits up to 30 s)."""
    got: list[str] = []
    arrived = threading.Event()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)

    def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        got.append(msg.payload.decode())
        arrived.set()

    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert arrived.wait(30), f"nothing retained on {topic}"
    finally:
        client.loop_stop()
        client.disconnect()
    return got[0]


def test_demo_delivers_captures_and_serves_the_page(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "demo",
            "--workdir",
            str(workdir),
            "--captures",
            "2",
            "--timeout",
            "180",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        errors: list[str] = []
        drain = threading.Thread(target=lambda: errors.extend(proc.stderr or []), daemon=True)
        drain.start()
        head = ""
        for line in proc.stdout:
            head += line
            if "Watch the spool" in line:
                break
        page = re.search(r"The technician's page:\s+(http://\S+)/", head)
        credentials = re.search(r'one-time login:\s+user "demo", password "(\S+)"', head)
        assert page, head
        assert credentials, head
        overview = asyncio.run(_log_in(page.group(1), credentials.group(1)))
        assert "Overview" in overview
        broker = re.search(r"MQTT \(fleet status\):\s+mqtt://127.0.0.1:(\d+)", head)
        assert broker, head
        status = _retained_status(int(broker.group(1)), "dermgate/dermgate-demo/status")
        assert status == "online"
        rest = proc.stdout.read()
        code = proc.wait(240)
        drain.join(10)
        proc.stdout.close()
        proc.stderr.close()
        assert code == 0, "".join(errors)[-3000:]
    finally:
        if proc.poll() is None:  # a failed assertion: do not leave the demo running
            proc.kill()
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
    stdout = head + rest
    summary = re.search(
        r"2 captures of each of 4 devices in Orthanc \((\d+) DICOM objects\)", stdout
    )
    assert summary, stdout[-2000:]
    objects = int(summary.group(1))
    assert credentials.group(1) not in "".join(errors), "the password is not logged"
    assert not (workdir / "ttyDERM0").exists(), "the simulator is gone"
    # Orthanc was stopped: its storage can be opened by a fresh server and holds every
    # object, of every device class.
    again = OrthancProcess(workdir / "orthanc")
    again.start()
    try:
        assert again.count_instances() == objects
        classes = {
            bytes(again.rest("GET", f"/instances/{oid}/metadata/SopClassUid")).decode()
            for oid in again.rest("GET", "/instances")
        }
        # Grouped and identified: the two scheduled patients, one study each (the
        # worklist's, with its accession number), series per device.
        patients = {
            again.rest("GET", f"/patients/{pid}")["MainDicomTags"]["PatientID"]
            for pid in again.rest("GET", "/patients")
        }
        studies = [again.rest("GET", f"/studies/{sid}") for sid in again.rest("GET", "/studies")]
        tracking = {
            str(again.rest("GET", f"/instances/{oid}/tags?simplify").get("TrackingUID"))
            for oid in again.rest("GET", "/instances")
            if bytes(again.rest("GET", f"/instances/{oid}/metadata/SopClassUid")).decode()
            in {
                "1.2.840.10008.5.1.4.1.1.77.1.7",
                "1.2.840.10008.5.1.4.1.1.77.1.8",
                "1.2.840.10008.5.1.4.1.1.77.1.9",
            }
        }
    finally:
        again.stop()
    assert patients == {"DEMO-0001", "DEMO-0002"}
    assert sorted(s["MainDicomTags"]["AccessionNumber"] for s in studies) == [
        "DEMO-ACC-0001",
        "DEMO-ACC-0002",
    ]
    assert all(len(s["Series"]) >= 2 for s in studies), "a series per device and kind"
    assert len(tracking) == 1, "one lesion: dermoscopy and confocal share its Tracking UID"
    assert "None" not in tracking
    assert {
        "1.2.840.10008.5.1.4.1.1.77.1.7",  # Dermoscopic Photography
        "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic (photos, 3D textures)
        "1.2.840.10008.5.1.4.1.1.104.4",  # Encapsulated OBJ
        "1.2.840.10008.5.1.4.1.1.104.5",  # Encapsulated MTL
    } <= classes
    assert classes & {"1.2.840.10008.5.1.4.1.1.77.1.8", "1.2.840.10008.5.1.4.1.1.77.1.9"}
    # The demo's worklist (Orthanc's plugin) was queried: both scheduled patients cached.
    ledger = sqlite3.connect(f"file:{workdir / 'state' / 'ledger.sqlite3'}?mode=ro", uri=True)
    try:
        (cached,) = ledger.execute("SELECT COUNT(*) FROM worklist_items").fetchone()
    finally:
        ledger.close()
    assert cached == 2
