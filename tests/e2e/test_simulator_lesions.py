"""Every device simulator's ``--lesion-id``/``--anatomic-site``/``--laterality`` reaches the
gateway through the real driver, and the objects in Orthanc carry the site.

One ``dermgate run`` serves all four simulated devices at once (serial dermatoscope
on a pty, USB confocal over the emulated backend, scanner export and photo folder
in real folders); the ledger's record of each capture's offer must hold the lesion
and site the simulator was told, and the dermoscopic, confocal and photographic
objects stored in Orthanc must carry the CID 4029 site with its laterality.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pydicom

from gateway.demo.local_orthanc import OrthancProcess
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.photo_folder import photo_folder_toml, start_camera
from tests.support.scanner_export import devices_toml, start_simulator
from tests.support.simulator import SimulatorProcess
from tests.support.state import ledger_rows, states
from tests.support.usb_confocal import ConfocalSimulator
from tests.support.waiting import wait_for

BACK = "66643007"  # SCT "Skin of back"
FOREARM = "70559009"  # SCT "Skin of anterior surface of forearm"
LEFT = "7771000"  # SCT "Left" (CID 244)


def test_each_simulator_lesion_reaches_the_offer_and_the_object(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
    confocal_sim: Callable[..., ConfocalSimulator],
) -> None:
    exports = tmp_path / "exports"
    photos = tmp_path / "photos"
    exports.mkdir()
    photos.mkdir()
    devices = f"""
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
{devices_toml(exports)}
{photo_folder_toml(photos)}
"""
    config = gateway_config(
        tmp_path, pacs_port=orthanc.dicom_port, commit_via=orthanc, devices=devices
    )
    lesion = ("--lesion-id", "L07", "--laterality", "L")
    scope = simulator_factory(
        *("--captures", "2", "--width", "320", "--height", "240"),
        *lesion,
        *("--anatomic-site", f"SCT:{BACK}"),
    )
    rcm = confocal_sim(
        *("--stacks", "1", "--frames", "3", "--size", "32x32"), *lesion, "--anatomic-site", BACK
    )
    gateway = gateway_factory(config)
    gateway.wait_running()
    scanner = start_simulator(
        exports,
        tmp_path / "scanner-report.json",
        *("--stl", "--mesh-mb", "0.2", "--scans", "1"),
        *("--lesion-id", "S1", "--laterality", "U", "--anatomic-site", f"SCT:{BACK}"),
    )
    camera = start_camera(
        photos,
        tmp_path,
        *("--photos", "2", "--format", "jpeg", "--format", "png"),
        *("--lesion-id", "L07", "--laterality", "L", "--anatomic-site", FOREARM),
    )
    try:
        for name, wait in (
            ("scope", scope.wait),
            ("rcm", rcm.wait),
            ("scanner", scanner.wait),
            ("camera", camera.wait),
        ):
            assert wait(180) == 0, f"{name}\n{gateway.log()}"
    finally:
        scanner.close()
        camera.stop()
    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 6, 120, "6 captures COMMITTED")

    offers: dict[str, list[dict[str, object]]] = {}
    for row in ledger_rows(state_dir):
        offers.setdefault(str(row["driver"]), []).append(json.loads(row["offer_json"]))
    expected = {
        "serial-dermatoscope": (2, "L07", BACK, "L"),
        "usb-confocal": (1, "L07", BACK, "L"),
        "scanner-export": (1, "S1", BACK, "U"),
        "photo-folder": (2, "L07", FOREARM, "L"),
    }
    assert sorted(offers) == sorted(expected)
    for driver, (count, label, site, side) in expected.items():
        assert len(offers[driver]) == count, driver
        for offer in offers[driver]:
            assert (offer["lesion_id"], offer["anatomic_site"], offer["laterality"]) == (
                label,
                site,
                side,
            ), driver

    for row in ledger_rows(state_dir):
        if row["driver"] == "scanner-export":
            continue  # surface objects have no Anatomic Region Sequence
        (found,) = orthanc.find_instances(row["sop_instance_uid"])
        ds = pydicom.dcmread(io.BytesIO(orthanc.instance_file(found)))
        want = FOREARM if row["driver"] == "photo-folder" else BACK
        if row["driver"] == "usb-confocal":  # multi-frame: in the Frame Anatomy group
            anatomy = ds.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0]
            assert anatomy.FrameLaterality == "L"
            region = anatomy.AnatomicRegionSequence[0]
        else:
            region = ds.AnatomicRegionSequence[0]
            assert region.AnatomicRegionModifierSequence[0].CodeValue == LEFT
        assert (region.CodeValue, region.CodingSchemeDesignator) == (want, "SCT")
    assert gateway.stop() == 0
