"""Privacy proof: patient data reaches the PACS and nothing else, end to end.

Three simulated scanner exports for three patients (a name with Polish and German
letters, a Japanese one, a three-component one; distinctive ids and birth dates)
go through ``dermgate run`` (a real process) to the real Orthanc with storage
commitment, while MQTT (a real Mosquitto, a subscriber on ``#`` from the start)
and the local page are live. Two paths produce error messages on purpose: an
export whose manifest has an impossible birth date (refused with a reason file)
and the PACS down while the captures arrive (destination errors, alarms).

Once everything is COMMITTED, every side door is searched for every seeded string
(full name, each name part longer than two characters, the id, the birth date as
YYYYMMDD and YYYY-MM-DD; case-insensitively, also HTML-, URL- and JSON-escaped):
every MQTT topic and payload received, every line of the gateway's log,
``/healthz``, ``/metrics``, the logged-in overview (and its live update), the
"why" panel, the spool and capture pages (reveal not clicked), the reason files,
``devices.json``, ``spool list`` (plain and ``--json``) and ``spool show`` (plain
and ``--json``, without ``--reveal``). A hit fails the test naming where it was
found and which field it was, not the value. The data must still be where it
belongs: in every object in Orthanc (as decoded by pydicom and by Orthanc), and
in ``spool show --reveal``, the one sanctioned way to see it on the box.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pydicom
import pytest

from gateway.cli import main as cli_main
from gateway.demo.local_orthanc import OrthancProcess, free_port
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.mqtt import Mosquitto, Recorder
from tests.support.privacy import PATIENTS, REFUSED, LeakScanner, patient_secrets
from tests.support.scanner_export import (
    Simulator,
    devices_toml,
    start_simulator,
    textured_files,
    write_export,
)
from tests.support.state import ledger_rows, states
from tests.support.waiting import wait_for
from tests.support.web import PASSWORD, login

STATE_TOPIC = "dermgate/test-box-01/state"
EVENTS_TOPIC = "dermgate/test-box-01/events"


REFUSED_FOLDER = "Kowalczyk-Ørsted_Bartholomew_001"  # named after the patient, as scanners do
OBJECTS_PER_EXPORT = 4  # OBJ, MTL, two textures


@pytest.fixture
def simulators() -> Iterator[list[Simulator]]:
    """Scanner simulators started by the test; killed at the end if still running."""
    started: list[Simulator] = []
    yield started
    for sim in started:
        sim.close()


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _latest_state(rec: Recorder) -> dict[str, Any] | None:
    got = rec.on(STATE_TOPIC)
    return got[-1].json() if got else None


def _committed_events(rec: Recorder) -> int:
    return sum(1 for m in rec.on(EVENTS_TOPIC) if m.json()["kind"] == "capture_committed")


async def _pages(base: str, capture_ids: list[int]) -> dict[str, tuple[int, str]]:
    """Log in and fetch every page a technician sees (reveal not clicked): path → (status, body)."""
    got: dict[str, tuple[int, str]] = {}
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        async with session.get(f"{base}/healthz") as r:
            got["/healthz (no login)"] = (r.status, await r.text())
        response = await login(session, base, "tech", PASSWORD)
        assert str(response.url) == f"{base}/", f"login failed: {response.status}"
        paths = ["/", "/spool", "/why", "/metrics", "/healthz"]
        paths += [f"/spool/{cid}" for cid in capture_ids]
        for path in paths:
            async with session.get(base + path) as r:
                got[path] = (r.status, await r.text())
        # The overview's live update (server-sent events): its first event.
        async with session.get(f"{base}/events") as r:
            first = b""
            while b"\n\n" not in first:
                first += await asyncio.wait_for(r.content.read(4096), 10)
            got["/events (first overview event)"] = (r.status, first.decode())
    return got


def test_no_patient_data_through_any_side_door(
    tmp_path: Path,
    orthanc: OrthancProcess,
    mosquitto: Mosquitto,
    recorder_factory: Callable[..., Recorder],
    gateway_factory: Callable[[Path], GatewayProcess],
    simulators: list[Simulator],
) -> None:
    rec = recorder_factory(mosquitto, ["#"])
    folder = tmp_path / "exports"
    folder.mkdir()
    state_dir = tmp_path / "state"
    web_port = free_port()
    base = f"http://127.0.0.1:{web_port}"
    config = gateway_config(
        tmp_path, pacs_port=orthanc.dicom_port, commit_via=orthanc, devices=devices_toml(folder)
    )
    with config.open("a", encoding="utf-8") as fh:
        fh.write("\n" + mosquitto.config_section())
        fh.write(f'\n[web]\nlisten = "127.0.0.1:{web_port}"\n')
    added = _cli("user", "add", "tech", "--config", str(config), "--password-stdin",
                 stdin=PASSWORD + "\n")  # fmt: skip
    assert added.returncode == 0, added.stderr

    # The PACS is down while the exports arrive: destination errors are produced.
    orthanc.stop()
    gateway = gateway_factory(config)
    gateway.wait_running()
    write_export(
        folder,
        REFUSED_FOLDER,
        textured_files(9),
        patient={"name": REFUSED.name, "id": REFUSED.id, "birth_date": REFUSED.birth_date},
    )
    for seed, patient in enumerate(PATIENTS, 1):
        seeded = ["--patient-name", patient.name, "--patient-id", patient.id]
        seeded += ["--birth-date", patient.birth_date, "--mesh-mb", "1", "--seed", str(seed)]
        simulators.append(start_simulator(folder, tmp_path / f"report-{seed}.json", *seeded))
    for sim in simulators:
        assert sim.wait(120) == 0, gateway.log()[-3000:]
        assert len(sim.result()["acknowledged"]) == 1
    total = OBJECTS_PER_EXPORT * len(PATIENTS)
    assert len(ledger_rows(state_dir)) == total
    reasons = wait_for(
        lambda: sorted((folder / ".refused").glob("*.reason.txt")), 30, "the refusal's reason file"
    )
    assert len(reasons) == 1
    assert "birth date" in reasons[0].read_text(encoding="utf-8")

    def destination_error() -> Any:
        state = _latest_state(rec)
        return state and state["destinations"][0]["last_error"]

    rec.wait(destination_error, 60, "a destination error in the state document")
    orthanc.start()
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * total, 90, "every object COMMITTED")
    rec.wait(lambda: _committed_events(rec) >= total, 30, "every capture_committed event")
    rec.wait(
        lambda: (
            (s := _latest_state(rec))
            and s["spool"]["counts"].get("COMMITTED") == total
            and not s["alarms"]
        ),
        30,
        "the state document: all COMMITTED, no alarms",
    )
    rows = ledger_rows(state_dir)
    capture_ids = [int(r["id"]) for r in rows]

    # Everything a person or a program can see while the gateway runs.
    scanner = LeakScanner(patient_secrets())
    pages = asyncio.run(_pages(base, capture_ids))
    for path, (status, body) in pages.items():
        assert status == 200, f"{path}: HTTP {status}"
        scanner.scan(f"local page {path}", body, "page")
    assert "dermgate_" in pages["/metrics"][1]
    devices_json = state_dir / "status" / "devices.json"
    scanner.scan("devices.json", devices_json.read_bytes(), "status file")
    for reason in reasons:
        scanner.scan(f"refusal reason file #{reasons.index(reason) + 1}", reason.read_bytes(), "r")
    assert gateway.stop() == 0

    # After the stop: the whole MQTT record (the offline status too), the whole log, the CLI.
    messages = rec.all()
    assert len(messages) > 30
    for n, message in enumerate(messages, 1):
        scanner.scan(f"MQTT topic of message #{n} ({message.topic!r})", message.topic, "mqtt")
        scanner.scan(f"MQTT payload of message #{n} on {message.topic!r}", message.payload, "mqtt")
    log_lines = gateway.log().splitlines()
    assert any("refused" in line.casefold() for line in log_lines), "the refusal is logged"
    assert any("destination pacs unavailable" in line for line in log_lines), "the outage too"
    kinds = {m.json()["kind"] for m in rec.on(EVENTS_TOPIC)}
    assert {"alarm_raised", "alarm_cleared", "capture_committed"} <= kinds
    assert not (state_dir / "web" / "audit.log").exists(), "nothing was revealed on the page"
    for n, line in enumerate(log_lines, 1):
        scanner.scan(f"gateway log line {n}", line, "log")
    for args in (("spool", "list"), ("spool", "list", "--json")):
        listed = _cli(*args, "--config", str(config))
        assert listed.returncode == 0, listed.stderr
        scanner.scan(f"`dermgate {' '.join(args)}` output", listed.stdout + listed.stderr, "cli")
        for cid in capture_ids:
            assert str(cid) in listed.stdout, f"capture {cid} is listed"
    # `spool show` of every capture, in this process (a child each would cost seconds).
    for cid in capture_ids:
        for extra in ((), ("--json",)):
            what = " ".join(("spool", "show", str(cid), *extra))
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli_main(["spool", "show", str(cid), *extra, "--config", str(config)])
            assert code == 0, f"{what}: {err.getvalue()}"
            assert "COMMITTED" in out.getvalue()
            scanner.scan(f"`dermgate {what}` output", out.getvalue() + err.getvalue(), "cli")
    scanner.assert_clean()
    assert scanner.scanned["page"] == len(pages)
    assert scanner.scanned["log"] > 30

    # The data is still where it belongs: every object of each export in Orthanc.
    by_study: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    into = tmp_path / "stored"
    into.mkdir()
    for row in rows:
        (orthanc_id,) = orthanc.find_instances(str(row["sop_instance_uid"]))
        path = into / f"{orthanc_id}.dcm"
        path.write_bytes(orthanc.instance_file(orthanc_id))
        ds = pydicom.dcmread(path)
        assert ds.SOPInstanceUID == row["sop_instance_uid"]
        tags = orthanc.rest("GET", f"/instances/{orthanc_id}/simplified-tags")
        stored = (str(ds.PatientName), str(ds.PatientID), str(ds.PatientBirthDate))
        assert (tags["PatientName"], tags["PatientID"], tags["PatientBirthDate"]) == stored, (
            "Orthanc decodes the patient as pydicom does (Specific Character Set)"
        )
        by_study[str(row["study_uid"])].append(stored)
    assert len(by_study) == len(PATIENTS)
    for study, patients in by_study.items():
        assert len(patients) == OBJECTS_PER_EXPORT, study
        assert len(set(patients)) == 1, f"study {study}: one patient in all its objects"
    assert {p[0] for p in by_study.values()} == {(p.name, p.id, p.birth_date) for p in PATIENTS}

    # ...and `spool show --reveal` (the one sanctioned way on the box) shows it.
    for patients in by_study.values():
        name, pid, birth = patients[0]
        row = next(r for r in rows if (by_study[str(r["study_uid"])][0][0]) == name)
        shown = _cli("spool", "show", str(row["id"]), "--reveal", "--config", str(config))
        assert shown.returncode == 0, shown.stderr
        assert name in shown.stdout
        assert pid in shown.stdout
        assert birth in shown.stdout
