"""Two worklist patients, two devices: two patients with one study each in Orthanc.

The gateway runs in this process (:func:`gateway.service.app.run_gateway`, every
stage real: intake, context, wrap, forward) so the test can open patient sessions
through the context stage it builds, as the page and the API will. Two simulated
serial dermatoscopes on ptys send captures; a real Orthanc stores them. Orthanc's
``/patients`` and ``/studies`` must show the worklist's patients, Study Instance
UIDs and accession numbers, each capture under the right one; the log never
names a patient.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.context.desk import PickItem, Scanned
from gateway.context.stage import ContextStage
from gateway.demo.local_orthanc import OrthancProcess
from gateway.service.app import run_gateway
from gateway.service.config import load_config
from gateway.spool import worklist_cache
from gateway.spool.schema import open_ledger
from tests.support.context import TECH, item
from tests.support.gateway_process import gateway_config
from tests.support.simulator import SimulatorProcess

STUDY_A = "1.2.826.0.1.3680043.8.498.2001"
STUDY_B = "1.2.826.0.1.3680043.8.498.2002"
ITEMS = [
    item(
        1, patient_id="MRN-2001", name="Lindqvist^Astrid", accession="ACC-2001", study_uid=STUDY_A
    ),
    item(2, patient_id="MRN-2002", name="Osei^Kwame", accession="ACC-2002", study_uid=STUDY_B),
]
SECRETS = ("MRN-2001", "MRN-2002", "Lindqvist", "Astrid", "Osei", "Kwame", "ACC-2001", "ACC-2002")


def _devices(tmp_path: Path) -> str:
    return "".join(
        f"""
[[devices]]
driver = "serial-dermatoscope"
name = "{name}"
port = "{tmp_path / link}"
stall_timeout = 5
reconnect_max = 1
"""
        for name, link in (("scope-a", "ttyA"), ("scope-b", "ttyB"))
    )


async def _wait(check: Callable[[], Any], timeout: float, what: str) -> None:
    for _ in range(int(timeout * 10)):
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_two_worklist_patients_from_two_devices_make_two_patients_in_orthanc(
    tmp_path: Path,
    orthanc: OrthancProcess,
    simulator_factory: Callable[..., SimulatorProcess],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    path = gateway_config(
        tmp_path, pacs_port=orthanc.dicom_port, devices=_devices(tmp_path), hold_unidentified=600
    )
    config = load_config(path)
    config.gateway.state_dir.mkdir(parents=True, exist_ok=True)
    conn = open_ledger(config.ledger_path())  # the worklist cache, as a refresh left it
    try:
        worklist_cache.replace_items(conn, ITEMS, source_ae="RIS", now=0.0)
    finally:
        conn.close()

    stages: list[ContextStage] = []
    stop = asyncio.Event()
    service = asyncio.create_task(run_gateway(config, stop, on_context=stages.append))
    try:
        await _wait(lambda: bool(stages), 30, "the context stage")
        desk = stages[0]
        a = await desk.open_session("scope-a", PickItem(accession_number="ACC-2001"), TECH)
        b = await desk.open_session("scope-b", Scanned(patient_id="MRN-2002"), TECH)
        sims = [
            simulator_factory("--captures", "2", "--interval", "0.2", "--seed", str(seed),
                              link=tmp_path / link)
            for seed, link in ((1, "ttyA"), (2, "ttyB"))
        ]  # fmt: skip
        for sim in sims:
            assert await asyncio.to_thread(sim.wait, 180) == 0
        await _wait(lambda: orthanc.count_instances() == 4, 120, "4 instances in Orthanc")

        patients = await asyncio.to_thread(orthanc.rest, "GET", "/patients?expand")
        by_id = {p["MainDicomTags"]["PatientID"]: p for p in patients}
        assert set(by_id) == {"MRN-2001", "MRN-2002"}, "two patients, no temporary one"
        for session, entry in ((a, ITEMS[0]), (b, ITEMS[1])):
            patient = by_id[entry.patient.patient_id]
            assert patient["MainDicomTags"]["PatientName"] == entry.patient.patient_name
            assert len(patient["Studies"]) == 1, "one study per patient, not one per capture"
            study = await asyncio.to_thread(
                orthanc.rest, "GET", f"/studies/{patient['Studies'][0]}"
            )
            tags = study["MainDicomTags"]
            assert tags["StudyInstanceUID"] == entry.study_uid == session.study_uid
            assert tags["AccessionNumber"] == entry.accession_number
            assert len(study["Series"]) == 1, "one series per device and kind"
            series = await asyncio.to_thread(orthanc.rest, "GET", f"/series/{study['Series'][0]}")
            assert len(series["Instances"]) == 2
        studies = await asyncio.to_thread(orthanc.rest, "GET", "/studies")
        assert len(studies) == 2
        views = {v.device: v for v in await desk.sessions()}
        assert (views["scope-a"].captures, views["scope-b"].captures) == (2, 2)
        assert await desk.held() == []
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(60):
                await service
    for secret in SECRETS:
        assert secret not in caplog.text, "patient data in the log"


async def test_held_captures_assigned_to_a_worklist_item_arrive_under_that_patient(
    tmp_path: Path,
    orthanc: OrthancProcess,
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    path = gateway_config(
        tmp_path, pacs_port=orthanc.dicom_port, devices=_devices(tmp_path), hold_unidentified=600
    )
    config = load_config(path)
    config.gateway.state_dir.mkdir(parents=True, exist_ok=True)
    conn = open_ledger(config.ledger_path())
    try:
        worklist_cache.replace_items(conn, ITEMS, source_ae="RIS", now=0.0)
    finally:
        conn.close()
    stages: list[ContextStage] = []
    stop = asyncio.Event()
    service = asyncio.create_task(run_gateway(config, stop, on_context=stages.append))
    try:
        await _wait(lambda: bool(stages), 30, "the context stage")
        desk = stages[0]
        sim = simulator_factory("--captures", "2", "--interval", "0.2", link=tmp_path / "ttyA")
        assert await asyncio.to_thread(sim.wait, 180) == 0, "held captures are acknowledged"
        held = await desk.held()
        assert [h.device for h in held] == ["scope-a", "scope-a"]
        await asyncio.sleep(1.0)
        assert await asyncio.to_thread(orthanc.count_instances) == 0, "held: nothing sent"
        moved = await desk.assign(
            [h.spool_id for h in held], None, ("scope-a", PickItem(sps_id="SPS2")), TECH
        )
        assert sorted(moved) == sorted(h.spool_id for h in held)
        await _wait(lambda: orthanc.count_instances() == 2, 120, "2 instances in Orthanc")
        patients = await asyncio.to_thread(orthanc.rest, "GET", "/patients?expand")
        assert [p["MainDicomTags"]["PatientID"] for p in patients] == ["MRN-2002"]
        [study_id] = patients[0]["Studies"]
        study = await asyncio.to_thread(orthanc.rest, "GET", f"/studies/{study_id}")
        assert study["MainDicomTags"]["StudyInstanceUID"] == STUDY_B
        assert study["MainDicomTags"]["AccessionNumber"] == "ACC-2002"
        assert await desk.held() == []
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.timeout(60):
                await service
