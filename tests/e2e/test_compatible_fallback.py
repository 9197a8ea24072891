"""``fallback = "compatible"``: a receiver that refuses a SOP class gets a derived
object of a class it takes, the same one at every resend; a refusal holds back only
the destination that refused.

Real peers: Orthanc as Debian ships it (``UnknownSopClassAccepted`` false, so the
confocal classes are refused), a pynetdicom SCP that takes VL Photographic only, the
RCM-1 confocal and the serial dermatoscope simulators, ``dermgate run``.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.encaps import generate_fragments

from gateway.core.config import DicomDestination
from gateway.demo.local_orthanc import OrthancProcess
from gateway.dicom.compatible import derived_instance_uid
from gateway.forward.cstore import CStoreSender, StoreRequest, Verdict
from tests.support.dciodvfy import dciodvfy_errors
from tests.support.dicom_files import make_dicom
from tests.support.gateway_process import GATEWAY_AE, GatewayProcess, gateway_config
from tests.support.peers import JPEG_BASELINE, MisbehavingPacs
from tests.support.simulator import SimulatorProcess
from tests.support.spool import dermgate, lose_ledger
from tests.support.state import delivery_rows, ledger_rows, states
from tests.support.usb_confocal import ConfocalSimulator, confocal_config
from tests.support.waiting import wait_for

BYTE_SC = "1.2.840.10008.5.1.4.1.1.7.2"
VL_PHOTO = "1.2.840.10008.5.1.4.1.1.77.1.4"
CONFOCAL = "1.2.840.10008.5.1.4.1.1.77.1.8"
STL = "1.2.840.10008.5.1.4.1.1.104.3"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
REASON = (
    "the PACS does not accept Confocal Microscopy Image Storage; set fallback or ask the "
    "PACS administrator to accept 1.2.840.10008.5.1.4.1.1.77.1.8"
)
COMPATIBLE = 'fallback = "compatible"'


def _pixel_data(path: Path) -> bytes:
    return bytes(pydicom.dcmread(path).PixelData)


def test_a_confocal_stack_reaches_a_refusing_orthanc_as_secondary_capture_once(
    tmp_path: Path,
    shipped_orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    confocal_sim: Callable[..., ConfocalSimulator],
) -> None:
    state_dir = tmp_path / "state"
    config = confocal_config(tmp_path, shipped_orthanc, extra_destination=COMPATIBLE)
    sim = confocal_sim("--stacks", "1", "--frames", "3", "--size", "32x32")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0, gateway.log()
    wait_for(lambda: states(state_dir) == ["COMMITTED"], 90, "the derived object committed")

    capture = ledger_rows(state_dir)[0]
    assert capture["sop_class_uid"] == CONFOCAL, "the spool keeps the original"
    derived = derived_instance_uid(capture["sop_instance_uid"], BYTE_SC)
    delivery = delivery_rows(state_dir)[0]
    assert (delivery["sent_sop_class_uid"], delivery["sent_sop_instance_uid"]) == (
        BYTE_SC,
        derived,
    )
    assert delivery["state"] == "COMMITTED", "commitment asked about the instance sent"
    assert shipped_orthanc.find_instances(capture["sop_instance_uid"]) == []
    (orthanc_id,) = shipped_orthanc.find_instances(derived)
    stored = pydicom.dcmread(io.BytesIO(shipped_orthanc.instance_file(orthanc_id)))
    assert stored.SOPClassUID == BYTE_SC
    assert int(stored.NumberOfFrames) == 3
    (source,) = stored.SourceImageSequence
    assert source.ReferencedSOPInstanceUID == capture["sop_instance_uid"]
    assert source.ReferencedSOPClassUID == CONFOCAL
    original = state_dir / "spool" / "dicom" / capture["dicom_name"]
    assert stored.PixelData == _pixel_data(original), "the same frames"
    copy = state_dir / "spool" / "derived" / capture["dicom_name"]
    assert dciodvfy_errors(copy) == []

    shown = dermgate("show", str(capture["id"]), config=config)
    assert shown.returncode == 0, shown.stderr
    sent_as = [line.split(None, 2) for line in shown.stdout.splitlines() if "Sent as" in line]
    assert sent_as == [
        [
            "Sent",
            "as",
            f"Multi-frame Grayscale Byte Secondary Capture Image Storage (derived, {derived})",
        ]
    ], shown.stdout
    assert gateway.stop() == 0

    # A lost ledger, rebuilt: the capture is sent again, and the PACS gets the same
    # derived instance, not a second one.
    ledger = lose_ledger(state_dir)
    assert ledger.stat().st_size == 0
    rebuilt = dermgate("rebuild", config=config)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert states(state_dir) == ["WRAPPED"]
    gateway.start()
    wait_for(lambda: states(state_dir) == ["COMMITTED"], 90, "the resend committed")
    assert delivery_rows(state_dir)[0]["sent_sop_instance_uid"] == derived
    assert shipped_orthanc.find_instances(derived) == [orthanc_id]
    assert shipped_orthanc.count_instances() == 1
    assert gateway.stop() == 0


def test_a_pacs_that_takes_only_vl_photographic_gets_the_same_jpeg(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    state_dir = tmp_path / "state"
    pacs.keep_datasets = True
    pacs.start(only=[(VL_PHOTO, JPEG_BASELINE)])
    config = gateway_config(
        tmp_path, pacs_port=pacs.port, pacs_ae="MISBEHAVE", extra_destination=COMPATIBLE
    )
    sim = simulator_factory("--captures", "1")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0, gateway.log()
    wait_for(lambda: states(state_dir) == ["SENT"], 60, "the VL Photographic copy sent")

    capture = ledger_rows(state_dir)[0]
    derived = derived_instance_uid(capture["sop_instance_uid"], VL_PHOTO)
    assert pacs.received == [derived], "sent once, as its derived object"
    (stored,) = pacs.stored
    assert stored.SOPClassUID == VL_PHOTO
    assert stored.file_meta.TransferSyntaxUID == JPEG_BASELINE
    original = pydicom.dcmread(state_dir / "spool" / "dicom" / capture["dicom_name"])
    assert list(generate_fragments(stored.PixelData)) == list(
        generate_fragments(original.PixelData)
    ), "the same JPEG bytes, not re-encoded"
    assert stored.SourceImageSequence[0].ReferencedSOPInstanceUID == original.SOPInstanceUID
    assert dciodvfy_errors(state_dir / "spool" / "derived" / capture["dicom_name"]) == []
    assert gateway.stop() == 0


def test_a_refusing_destination_holds_back_only_itself(
    tmp_path: Path,
    shipped_orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    confocal_sim: Callable[..., ConfocalSimulator],
) -> None:
    state_dir = tmp_path / "state"
    archive = OrthancProcess(
        tmp_path / "archive",
        modalities={"dermgate": shipped_orthanc.modalities["dermgate"]},
    )
    archive.start()
    try:
        second = f"""
[[destinations]]
name = "archive"
kind = "dicom"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = {archive.dicom_port}
commitment_batch_delay = 0.2
retry_initial = 0.5
retry_max = 2.0
"""
        config = confocal_config(tmp_path, shipped_orthanc, extra_destination=second)
        sim = confocal_sim("--stacks", "1", "--frames", "2", "--size", "32x32")
        gateway = gateway_factory(config)
        assert sim.wait(120) == 0, gateway.log()

        def by_destination() -> dict[str, str]:
            return {r["destination"]: r["state"] for r in delivery_rows(state_dir)}

        wait_for(
            lambda: by_destination() == {"archive": "COMMITTED", "pacs": "FAILED"},
            90,
            "the archive's delivery despite the PACS's refusal",
        )
        wait_for(lambda: states(state_dir) == ["QUARANTINED"], 30, "the capture set aside")
        capture = ledger_rows(state_dir)[0]
        assert capture["reason"] == f"pacs refused it: {REASON}"
        assert len(archive.find_instances(capture["sop_instance_uid"])) == 1
        assert shipped_orthanc.count_instances() == 0
        assert (state_dir / "spool" / "dicom" / capture["dicom_name"]).exists(), "never purged"
        shown = dermgate("show", str(capture["id"]), config=config)
        assert REASON in shown.stdout
        assert gateway.stop() == 0

        # The PACS administrator accepts the class; the technician sends it again.
        shipped_orthanc.stop()
        shipped_orthanc.extra["UnknownSopClassAccepted"] = True
        shipped_orthanc.start()
        retried = dermgate("retry", str(capture["id"]), config=config)
        assert retried.returncode == 0, retried.stderr
        gateway.start()
        wait_for(lambda: states(state_dir) == ["COMMITTED"], 90, "both destinations")
        assert len(shipped_orthanc.find_instances(capture["sop_instance_uid"])) == 1
        assert archive.count_instances() == 1
        assert gateway.stop() == 0
    finally:
        archive.stop()


def test_a_3d_object_has_no_substitute_and_says_so(tmp_path: Path, pacs: MisbehavingPacs) -> None:
    """Under ``compatible``, a refused OBJ/MTL/STL stays refused with the reason."""
    pacs.start(only=[(VL_PHOTO, JPEG_BASELINE)])
    path, _ = make_dicom(tmp_path, 1)
    destination = DicomDestination(
        name="pacs",
        kind="dicom",
        ae_title="MISBEHAVE",
        host="127.0.0.1",
        port=pacs.port,
        fallback="compatible",
        connect_timeout=2,
        acse_timeout=2,
    )
    (outcome,) = CStoreSender(GATEWAY_AE, destination).send_batch(
        [StoreRequest(1, path, STL, EXPLICIT_LE)], threading.Event()
    )
    assert outcome.verdict is Verdict.PERMANENT
    assert outcome.detail == (
        "the PACS does not accept Encapsulated STL Storage; set fallback or ask the PACS "
        'administrator to accept 1.2.840.10008.5.1.4.1.1.104.3 (fallback = "compatible": '
        "no other class carries it losslessly)"
    )
    assert pacs.received == []
