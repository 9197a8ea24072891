"""Done when, through the integration API: two worklist patients (items in Orthanc's
worklist plugin), sessions opened on two devices (the serial dermatoscope and the
USB confocal microscope simulators) by accession number and by SPS ID, one lesion
chosen per patient; the captures arrive in the PACS as two patients with one study
each (the worklist's Study Instance UIDs and accession numbers), a series per device,
and the lesion's Tracking UID shared by the dermoscopic and confocal objects of one
patient (the microscope takes the lesion chosen over the API, the dermatoscope names
it by its label) but not across patients, though both patients' lesions are "L01"."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pydicom

from gateway.demo.local_orthanc import OrthancProcess
from tests.support.api import api_config, call, start_service, token_add
from tests.support.gateway_process import GatewayProcess
from tests.support.privacy import PATIENTS, LeakScanner
from tests.support.simulator import SimulatorProcess
from tests.support.state import ledger_rows
from tests.support.usb_confocal import ConfocalSimulator
from tests.support.waiting import wait_for
from tests.support.worklist import Item, orthanc_worklist, write_items

TODAY = date.today().strftime("%Y%m%d")
STUDY_1, STUDY_2 = "1.2.826.0.1.3680043.8.498.301", "1.2.826.0.1.3680043.8.498.302"
ACC_1, ACC_2 = "ACC-API-0001", "ACC-API-0002"
FIRST, SECOND = PATIENTS[0], PATIENTS[1]
MOLE = {"site": "SCT:66643007", "laterality": "L", "description": "mole"}


def _items() -> list[Item]:
    return [
        Item(FIRST.name, FIRST.id, STUDY_1, "SPS-A1", TODAY, accession=ACC_1,
             birth_date=FIRST.birth_date, sex="F", charset="ISO_IR 192"),
        Item(SECOND.name, SECOND.id, STUDY_2, "SPS-A2", TODAY, accession=ACC_2,
             birth_date=SECOND.birth_date, sex="F", charset="ISO_IR 192"),
    ]  # fmt: skip


def _config(tmp_path: Path, pacs: OrthancProcess, ris_port: int) -> tuple[Path, str]:
    extra = f"""
[worklist]
ae_title = "RIS"
host = "127.0.0.1"
port = {ris_port}
modality = "XC"

[context]
hold_unidentified = 600

[[destinations]]
name = "pacs"
kind = "dicom"
ae_title = "{pacs.aet}"
host = "127.0.0.1"
port = {pacs.dicom_port}
connect_timeout = 3

[[devices]]
driver = "serial-dermatoscope"
name = "scope"
port = "{tmp_path / "ttyDERM0"}"
stall_timeout = 5
reconnect_max = 1

[[devices]]
driver = "usb-confocal"
name = "rcm"
usb_backend = "emulated:{tmp_path / "rcm.sock"}"
stall_timeout = 5
reconnect_max = 1
"""
    return api_config(tmp_path, extra=extra)


def _stored(pacs: OrthancProcess, state_dir: Path, into: Path) -> list[pydicom.Dataset]:
    """Every capture's objects as the PACS stored them (headers only)."""
    found = []
    for row in ledger_rows(state_dir):
        for orthanc_id in pacs.find_instances(str(row["sop_instance_uid"])):
            path = into / f"{orthanc_id}.dcm"
            if not path.exists():
                path.write_bytes(pacs.instance_file(orthanc_id))
            found.append(pydicom.dcmread(path, stop_before_pixels=True))
    return found


def test_two_worklist_patients_from_two_devices_arrive_grouped_through_the_api(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
    confocal_sim: Callable[..., ConfocalSimulator],
) -> None:
    ris, folder = orthanc_worklist(tmp_path / "ris")
    try:
        write_items(folder, _items())
        config, base = _config(tmp_path, orthanc, ris.dicom_port)
        token = token_add(config, "ehr")
        gateway = start_service(gateway_factory, config, base)
        state_dir = tmp_path / "state"
        into = tmp_path / "stored"
        into.mkdir()
        lesions: dict[str, dict[str, Any]] = {}

        async def api(method: str, path: str, body: Any = None) -> Any:
            async with aiohttp.ClientSession() as s:
                answer = await call(s, method, base + path, token=token, body=body)
            assert answer.status < 300, (method, path, answer.text)
            return answer.body

        async def worklist() -> dict[str, Any]:
            for _ in range(120):
                answer: dict[str, Any] = await api("GET", "/api/v1/worklist")
                if len(answer["items"]) == 2:
                    return answer
                await asyncio.sleep(0.5)
            raise AssertionError("the worklist cache never held both items")

        listing = asyncio.run(worklist())
        assert {i["study_instance_uid"] for i in listing["items"]} == {STUDY_1, STUDY_2}
        assert listing["status"]["items"] == 2
        assert listing["status"]["stale"] is False
        assert listing["status"]["error"] is None
        for search in (FIRST.id, FIRST.name.split("^")[0].lower(), ACC_1):
            found = asyncio.run(api("GET", "/api/v1/worklist?q=" + quote(search)))["items"]
            assert [(i["accession_number"], i["patient"]["name"]) for i in found] == [
                (ACC_1, FIRST.name)]  # fmt: skip

        for n, (patient, acc, sps) in enumerate(
            ((FIRST, ACC_1, "SPS-A1"), (SECOND, ACC_2, "SPS-A2")), 1
        ):

            async def open_both(acc: str = acc, sps: str = sps) -> tuple[dict[str, Any], ...]:
                scope = await api("POST", "/api/v1/sessions",
                                  {"device": "scope", "accession_number": acc})  # fmt: skip
                rcm = await api("POST", "/api/v1/sessions",
                                {"device": "rcm", "scheduled_procedure_step_id": sps})  # fmt: skip
                chosen = await api("POST", f"/api/v1/sessions/{scope['session']}/lesion", MOLE)
                same = await api("POST", f"/api/v1/sessions/{rcm['session']}/lesion",
                                 {"tracking_id": chosen["tracking_id"]})  # fmt: skip
                assert same == chosen
                return scope, rcm, chosen

            scope, rcm, chosen = asyncio.run(open_both())
            assert scope["study_instance_uid"] == rcm["study_instance_uid"]
            assert scope["patient"]["id"] == patient.id
            lesions[patient.id] = chosen
            before = len(ledger_rows(state_dir))
            # The dermatoscope names the lesion itself, by the label the API gave it
            # (mapped into this patient's registry); the microscope names none and
            # takes the session's lesion.
            sim = simulator_factory("--captures", "1", "--seed", str(n), "--lesion-id",
                                    chosen["tracking_id"], "--anatomic-site", MOLE["site"],
                                    "--laterality", "L")  # fmt: skip
            rcm_sim = confocal_sim("--stacks", "1", "--frames", "2", "--seed", str(n))
            assert sim.wait(120) == 0, gateway.log()[-3000:]
            assert rcm_sim.wait(120) == 0, gateway.log()[-3000:]
            wait_for(lambda before=before: len(ledger_rows(state_dir)) >= before + 2, 60,
                     "both captures of this patient in the ledger")  # fmt: skip
            wait_for(lambda before=before: len(_stored(orthanc, state_dir, into)) >= before + 2,
                     90, "both captures of this patient in the PACS")  # fmt: skip

        # The same label on two patients: two lesions, never one Tracking UID.
        assert lesions[FIRST.id]["tracking_id"] == lesions[SECOND.id]["tracking_id"]
        assert lesions[FIRST.id]["tracking_uid"] != lesions[SECOND.id]["tracking_uid"]
        stored = _stored(orthanc, state_dir, into)
        assert len(stored) == 4
        by_patient: dict[str, list[pydicom.Dataset]] = defaultdict(list)
        for ds in stored:
            by_patient[str(ds.PatientID)].append(ds)
        assert set(by_patient) == {FIRST.id, SECOND.id}
        for patient, study, acc in ((FIRST, STUDY_1, ACC_1), (SECOND, STUDY_2, ACC_2)):
            objects = by_patient[patient.id]
            assert {str(ds.StudyInstanceUID) for ds in objects} == {study}
            assert {str(ds.AccessionNumber) for ds in objects} == {acc}
            assert {str(ds.PatientName) for ds in objects} == {patient.name}
            assert len({str(ds.SeriesInstanceUID) for ds in objects}) == 2, "a series per device"
            assert all(str(ds.get("SeriesDescription", "")) for ds in objects)
            assert {str(ds.TrackingUID) for ds in objects} == {lesions[patient.id]["tracking_uid"]}

        # The PACS groups them: two patients, one study each.
        assert len(orthanc.rest("GET", "/patients")) == 2
        studies = [orthanc.rest("GET", f"/studies/{s}") for s in orthanc.rest("GET", "/studies")]
        assert sorted(s["MainDicomTags"]["StudyInstanceUID"] for s in studies) == [
            STUDY_1, STUDY_2]  # fmt: skip
        assert sorted(s["MainDicomTags"]["AccessionNumber"] for s in studies) == [ACC_1, ACC_2]

        assert gateway.stop() == 0
        leaks = LeakScanner([s for p in (FIRST, SECOND) for s in p.secrets("patient")])
        for n, line in enumerate(gateway.log().splitlines(), 1):
            leaks.scan(f"gateway log line {n}", line, "log")
        leaks.scan("audit log", (state_dir / "web" / "audit.log").read_text(), "audit")
        leaks.assert_clean()
    finally:
        ris.stop()
