"""STOW-RS destinations through the running gateway, against Orthanc's DICOMweb plugin.

Captures from the serial dermatoscope simulator reach Orthanc by STOW-RS and become
COMMITTED once QIDO-RS lists them (read-back), each stored exactly once (counted by
SOP Instance UID in Orthanc). With Orthanc's own Basic auth, a wrong password is a
plain, retried failure that never shows the password, and the captures go as soon
as the password file is right. ``dermgate echo``, the page's "why" checks and MQTT say
whether a DICOMweb destination answers, never with the password.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp

from gateway.core.config import DicomwebDestination
from gateway.demo.local_orthanc import free_port
from gateway.status.web.checks import FAIL, OK, check_web_destination
from tests.support.dicomweb import DicomwebOrthanc, dicomweb_config
from tests.support.gateway_process import GatewayProcess
from tests.support.mqtt import Mosquitto, Recorder
from tests.support.simulator import SimulatorProcess
from tests.support.spool import dermgate
from tests.support.state import delivery_rows, ledger_rows, states
from tests.support.waiting import wait_for
from tests.support.web import PASSWORD as WEB_PASSWORD
from tests.support.web import cookie_client, login_status, user_add

PASSWORD = "s3cret-Pa55word"
WRONG = "not-the-Pa55word"


def echo(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``dermgate echo --config CONFIG``."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "echo", "--config", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_captures_reach_orthanc_by_stow_once_each_and_are_committed_by_read_back(
    tmp_path: Path,
    dicomweb_orthanc_factory: Callable[..., DicomwebOrthanc],
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    store = dicomweb_orthanc_factory()
    config = dicomweb_config(tmp_path, store.dicomweb_url)
    sim = simulator_factory("--captures", "3", "--interval", "0.1")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0
    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 3, 60, "read-back confirmation")
    uids = [str(r["sop_instance_uid"]) for r in ledger_rows(state_dir)]
    assert store.copies(uids) == dict.fromkeys(uids, 1), "exactly once"
    assert all(d["destination"] == "cloud" for d in delivery_rows(state_dir))
    listing = dermgate("list", config=config)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.count("COMMITTED") >= 3
    assert "confirmed by read-back" in gateway.log()
    assert gateway.stop() == 0


def test_basic_auth_wrong_password_is_a_plain_retried_failure_without_the_secret(
    tmp_path: Path,
    dicomweb_orthanc_factory: Callable[..., DicomwebOrthanc],
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
    mosquitto: Mosquitto,
    recorder_factory: Callable[..., Recorder],
) -> None:
    store = dicomweb_orthanc_factory(users={"dermgate": PASSWORD})
    password_file = tmp_path / "password"
    password_file.write_text(WRONG + "\n", encoding="utf-8")
    config = dicomweb_config(
        tmp_path,
        store.dicomweb_url,
        destination=f'auth = "basic"\nusername = "dermgate"\npassword_file = "{password_file}"',
    )
    refused = echo(config, "--json")
    assert refused.returncode == 1
    [entry] = json.loads(refused.stdout)["destinations"]
    assert entry["kind"] == "dicomweb"
    assert entry["error"]["code"] == "auth_refused"
    assert entry["error"]["message"].endswith("(HTTP 401)")
    destination = DicomwebDestination(
        name="cloud",
        kind="dicomweb",
        url=store.dicomweb_url,
        auth="basic",
        username="dermgate",
        password_file=password_file,
    )
    assert check_web_destination(destination).status == FAIL

    with config.open("a", encoding="utf-8") as fh:
        fh.write("\n" + mosquitto.config_section())
    mqtt = recorder_factory(mosquitto, ["dermgate/#"])
    sim = simulator_factory("--captures", "2", "--interval", "0.1")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0
    state_dir = tmp_path / "state"

    def refused_twice() -> bool:
        rows = delivery_rows(state_dir) if ledger_rows(state_dir) else []
        return len(rows) == 2 and all(r["attempts"] >= 2 for r in rows)

    wait_for(refused_twice, 60, "retries while the password is wrong")
    for row in delivery_rows(state_dir):
        assert row["state"] == "PENDING", "a wrong password is not a reason to give up"
        assert row["error_code"] == "auth_refused"
        assert "refused the credentials" in row["last_error"]

    def reported_on_mqtt() -> bool:
        for message in mqtt.all():
            if message.topic.endswith("/state"):
                for dest in message.json().get("destinations", []):
                    error = dest.get("last_error") or {}
                    if error.get("code") == "auth_refused":
                        return True
        return False

    mqtt.wait(reported_on_mqtt, 30, "the plain reason on MQTT")

    password_file.write_text(PASSWORD + "\n", encoding="utf-8")  # re-read when it changes
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 2, 60, "delivery once it is right")
    uids = [str(r["sop_instance_uid"]) for r in ledger_rows(state_dir)]
    assert store.copies(uids) == dict.fromkeys(uids, 1)
    assert echo(config).returncode == 0
    assert check_web_destination(destination).status == OK
    log = gateway.log()
    assert gateway.stop() == 0
    published = b"".join(m.payload for m in mqtt.all())
    for secret in (PASSWORD, WRONG):
        assert secret not in log
        assert secret.encode() not in published
        assert secret not in refused.stdout + refused.stderr


_WHY_ROW = re.compile(r'<tr class="(\w+)"><td[^>]*>(DICOMweb store [^<]*)</td>(.*?)</tr>', re.S)


def test_why_page_tells_a_refused_password_for_a_dicomweb_store_without_showing_it(
    tmp_path: Path,
    dicomweb_orthanc_factory: Callable[..., DicomwebOrthanc],
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    store = dicomweb_orthanc_factory(users={"dermgate": PASSWORD})
    password_file = tmp_path / "password"
    password_file.write_text(WRONG + "\n", encoding="utf-8")
    web_port = free_port()
    config = dicomweb_config(
        tmp_path,
        store.dicomweb_url,
        destination=f'auth = "basic"\nusername = "dermgate"\npassword_file = "{password_file}"',
        devices=f'\n[web]\nlisten = "127.0.0.1:{web_port}"\n',
    )
    base = f"http://127.0.0.1:{web_port}"
    user_add(config, "tech", WEB_PASSWORD)
    gateway = gateway_factory(config)
    gateway.wait_running()

    async def pages() -> tuple[str, str]:
        async with cookie_client() as tech:
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                try:
                    assert await login_status(tech, base, "tech", WEB_PASSWORD) == 303
                    break
                except aiohttp.ClientConnectionError:
                    assert asyncio.get_running_loop().time() < deadline, "the page never answered"
                    await asyncio.sleep(0.2)
            async with tech.get(f"{base}/why") as why, tech.get(f"{base}/") as overview:
                assert why.status == 200
                assert overview.status == 200
                return await why.text(), await overview.text()

    why, overview = asyncio.run(pages())
    assert gateway.stop() == 0
    [(status, name, rest)] = _WHY_ROW.findall(why)
    assert status == "fail", rest
    assert name.startswith("DICOMweb store cloud (127.0.0.1:")
    text = html.unescape(re.sub(r"<[^>]+>", " ", rest))
    assert "refused the gateway's credentials" in text, text
    assert "password" in text, "what to check"
    assert "cloud" in overview, "the store is listed among the destinations"
    for secret in (PASSWORD, WRONG):
        assert secret not in why
        assert secret not in overview


def test_a_pacs_and_a_dicomweb_store_each_get_the_capture_and_it_waits_for_both(
    tmp_path: Path,
    dicomweb_orthanc_factory: Callable[..., DicomwebOrthanc],
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    pacs = dicomweb_orthanc_factory()  # reached by C-STORE here
    store = dicomweb_orthanc_factory(users={"dermgate": PASSWORD})
    password_file = tmp_path / "password"
    password_file.write_text(WRONG + "\n", encoding="utf-8")
    config = dicomweb_config(
        tmp_path,
        store.dicomweb_url,
        destination=f"""auth = "basic"
username = "dermgate"
password_file = "{password_file}"

[[destinations]]
name = "pacs"
kind = "dicom"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = {pacs.dicom_port}
storage_commitment = false
unconfirmed_retention = 0
retry_initial = 0.5
retry_max = 2.0
""",
    )
    sim = simulator_factory("--captures", "1")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0
    state_dir = tmp_path / "state"

    def by_destination() -> dict[str, str]:
        rows = delivery_rows(state_dir) if ledger_rows(state_dir) else []
        return {str(r["destination"]): str(r["state"]) for r in rows}

    wait_for(lambda: by_destination().get("pacs") == "COMMITTED", 60, "the PACS's copy")
    assert by_destination()["cloud"] == "PENDING"
    assert states(state_dir) == ["WRAPPED"], "not done while the store still waits"

    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    wait_for(lambda: states(state_dir) == ["COMMITTED"], 60, "both confirmed")
    [uid] = [str(r["sop_instance_uid"]) for r in ledger_rows(state_dir)]
    assert pacs.copies([uid]) == {uid: 1}
    assert store.copies([uid]) == {uid: 1}
    assert gateway.stop() == 0
