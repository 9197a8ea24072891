"""The worklist cache in the running service and on the command line.

A real Orthanc with its worklist plugin holds the clinic's orders (seeded patients
with non-ASCII names). The service fills its cache; the MQTT state shows counts and
age only; ``dermgate worklist list`` masks patient data unless ``--reveal``, which
writes an audit line first; when the SCP goes away the cache stays in use, shown
stale with its age, and ``dermgate worklist refresh`` exits 1. Nothing of the
patients reaches the log, MQTT or a masked listing.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.mqtt import Mosquitto, Recorder
from tests.support.privacy import PATIENTS, LeakScanner, patient_secrets
from tests.support.waiting import wait_for
from tests.support.worklist import Item, WorklistServer, write_items

STATE = "dermgate/test-box-01/state"
EVENTS = "dermgate/test-box-01/events"
TODAY = date.today().strftime("%Y%m%d")


def _items() -> list[Item]:
    first, second = PATIENTS[0], PATIENTS[1]
    return [
        Item(first.name, first.id, "1.2.826.0.1.3680043.8.498.201", "SPS1", TODAY,
             accession="ACC-2026-0001", birth_date=first.birth_date, sex="F",
             charset="ISO_IR 192"),
        Item(second.name, second.id, "1.2.826.0.1.3680043.8.498.202", "SPS2", TODAY,
             accession="ACC-2026-0002", birth_date=second.birth_date, sex="F",
             charset="ISO_IR 192"),
    ]  # fmt: skip


def worklist_cli(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    """Run ``dermgate worklist ARGS --config CONFIG``."""
    command = [sys.executable, "-m", "gateway.cli", "worklist", *args, "--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def _config(tmp_path: Path, server: WorklistServer, broker: Mosquitto) -> Path:
    config = gateway_config(tmp_path, pacs_port=server.port, devices="")
    with config.open("a", encoding="utf-8") as fh:
        fh.write("\n" + server.toml(modality="XC", refresh=10, stale_after=4, timeout=3))
        fh.write("\n" + broker.config_section())
    return config


def _worklist_state(rec: Recorder) -> dict[str, Any] | None:
    states = rec.on(STATE)
    return states[-1].json().get("worklist") if states else None


def _fetch_row(tmp_path: Path) -> tuple[Any, ...]:
    conn = sqlite3.connect(f"file:{tmp_path / 'state' / 'ledger.sqlite3'}?mode=ro", uri=True)
    try:
        return tuple(conn.execute("SELECT tried_at, ok_at, error FROM worklist_fetch").fetchone())
    finally:
        conn.close()


def test_cache_status_cli_and_outage(
    tmp_path: Path,
    orthanc_mwl: WorklistServer,
    mosquitto: Mosquitto,
    recorder_factory: Callable[..., Recorder],
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    write_items(orthanc_mwl.folder, _items())
    config = _config(tmp_path, orthanc_mwl, mosquitto)
    rec = recorder_factory(mosquitto, ["dermgate/#"])
    gateway = gateway_factory(config)
    scanner = LeakScanner(patient_secrets())

    fresh = wait_for(
        lambda: (w := _worklist_state(rec)) and w.get("items") == 2 and w,
        60,
        "the worklist's two items in the MQTT state",
    )
    assert fresh["configured"] is True
    assert fresh["stale"] is False
    assert fresh["last_error"] is None
    assert 0 <= fresh["age_s"] < 60
    events = [m.json() for m in rec.on(EVENTS)]
    assert {"kind": "worklist_refreshed", "items": 2, "ok": True}.items() <= next(
        e for e in events if e["kind"] == "worklist_refreshed"
    ).items()

    # A refresh from the command line while the service runs.
    refreshed = worklist_cli("refresh", config=config)
    assert refreshed.returncode == 0, refreshed.stderr
    assert "2 item(s) kept of 2 answer(s)" in refreshed.stdout

    # Masked by default: the schedule, not the patients.
    masked = worklist_cli("list", config=config)
    assert masked.returncode == 0, masked.stderr
    assert "2 item(s), fetched" in masked.stdout
    assert masked.stdout.count("\u2022" * 8) >= 8
    as_json = worklist_cli("list", "--json", config=config)
    document = json.loads(as_json.stdout)
    assert document["items"] == 2
    assert document["revealed"] is False
    assert all(e["patient_id"] is None for e in document["entries"])
    audit = tmp_path / "state" / "web" / "audit.log"
    assert not audit.exists()

    # --reveal: audited first, then shown.
    revealed = worklist_cli("list", "--reveal", "--reason", "reconciliation", config=config)
    assert revealed.returncode == 0, revealed.stderr
    assert PATIENTS[0].id in revealed.stdout
    assert PATIENTS[1].id in revealed.stdout
    assert PATIENTS[0].name in revealed.stdout  # UTF-8 names intact
    (line,) = audit.read_text().splitlines()
    assert "action=cli-worklist-reveal items=2 reason=reconciliation" in line

    # The SCP goes away: the cache stays, stale with its age; refresh exits 1.
    orthanc_mwl.stop.stop()
    failed = worklist_cli("refresh", config=config)
    assert failed.returncode == 1
    assert "unreachable" in failed.stderr
    assert "the cached worklist stays in use (2 item(s)" in failed.stderr
    stale = wait_for(
        lambda: (w := _worklist_state(rec)) and w.get("stale") and w.get("last_error") and w,
        60,
        "a stale worklist in the MQTT state",
    )
    assert stale["items"] == 2
    assert stale["last_error"] == "unreachable"
    assert stale["age_s"] >= 4
    still = worklist_cli("list", config=config)
    assert "2 item(s), fetched" in still.stdout
    assert "(stale)" in still.stdout
    assert "last refresh failed: unreachable" in still.stdout

    # The service keeps trying, and says so once.
    tried = _fetch_row(tmp_path)[0]
    wait_for(lambda: _fetch_row(tmp_path)[0] > tried + 5, 40, "another failed refresh")
    assert gateway.log().count("the cached worklist (2 item(s)) stays in use") == 1
    assert gateway.stop() == 0

    for where, text in (
        ("gateway log", gateway.log()),
        ("masked list", masked.stdout + masked.stderr),
        ("masked json", as_json.stdout),
        ("refresh", refreshed.stdout + refreshed.stderr + failed.stdout + failed.stderr),
        ("audit log", audit.read_text()),
    ):
        scanner.scan(where, text, where)
    for message in rec.all():
        scanner.scan(f"mqtt {message.topic}", message.payload, "mqtt")
    assert scanner.hits == []


def test_commands_refuse_a_configuration_without_worklist(tmp_path: Path) -> None:
    config = gateway_config(tmp_path, pacs_port=104, devices="")
    for action in ("list", "refresh"):
        done = worklist_cli(action, config=config)
        assert done.returncode == 2
        assert "has no [worklist] section" in done.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text(config.read_text() + '\n[worklist]\nae_title = "RIS"\n')
    done = worklist_cli("list", config=broken)
    assert done.returncode == 2
    assert "worklist" in done.stderr


def test_list_before_any_refresh_says_never_fetched(
    tmp_path: Path, orthanc_mwl: WorklistServer, mosquitto: Mosquitto
) -> None:
    config = _config(tmp_path, orthanc_mwl, mosquitto)
    done = worklist_cli("list", "--reveal", config=config)
    assert done.returncode == 0, done.stderr
    assert "0 item(s), never fetched" in done.stdout
    assert not (tmp_path / "state" / "web" / "audit.log").exists()  # nothing was shown
