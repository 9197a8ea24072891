"""The C-STORE seam against real pynetdicom SCPs that misbehave on purpose."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.sop_class import DermoscopicPhotographyImageStorage

from gateway.core.config import DicomDestination
from gateway.core.errors import DeliveryErrorCode
from gateway.core.uids import new_uid
from gateway.demo.local_orthanc import free_port
from gateway.forward.cstore import CStoreSender, StoreRequest, Verdict
from tests.support.dicom_files import make_dicom
from tests.support.peers import JPEG_BASELINE, MisbehavingPacs

CONFOCAL = "1.2.840.10008.5.1.4.1.1.77.1.8"


def destination(port: int, **overrides: Any) -> DicomDestination:
    values: dict[str, Any] = {
        "name": "pacs",
        "kind": "dicom",
        "ae_title": "MISBEHAVE",
        "host": "127.0.0.1",
        "port": port,
        "connect_timeout": 2,
        "acse_timeout": 2,
        "dimse_timeout": 2,
        "network_timeout": 2,
    }
    values.update(overrides)
    return DicomDestination(**values)


def requests(tmp_path: Path, count: int) -> list[StoreRequest]:
    out = []
    for i in range(count):
        path, _ = make_dicom(tmp_path, i)
        out.append(StoreRequest(i, path, str(DermoscopicPhotographyImageStorage), JPEG_BASELINE))
    return out


def test_scripted_statuses_reach_the_right_verdicts(tmp_path: Path, pacs: MisbehavingPacs) -> None:
    pacs.script = [0xA700, 0xC000, 0xB000, 0x0000]
    pacs.start()
    outcomes = CStoreSender("DERMGATE", destination(pacs.port)).send_batch(
        requests(tmp_path, 4), threading.Event()
    )
    assert [o.verdict for o in outcomes] == [
        Verdict.RETRYABLE,
        Verdict.PERMANENT,
        Verdict.WARNING,
        Verdict.SUCCESS,
    ]
    assert outcomes[1].detail == "C-STORE status 0xC000"
    assert len(pacs.received) == 2


def test_abort_mid_batch_makes_the_rest_retryable(tmp_path: Path, pacs: MisbehavingPacs) -> None:
    pacs.script = [0x0000, "abort"]
    pacs.start()
    outcomes = CStoreSender("DERMGATE", destination(pacs.port)).send_batch(
        requests(tmp_path, 3), threading.Event()
    )
    assert outcomes[0].verdict is Verdict.SUCCESS
    assert [o.verdict for o in outcomes[1:]] == [Verdict.RETRYABLE, Verdict.RETRYABLE]


def test_silent_peer_times_out_as_retryable(tmp_path: Path, pacs: MisbehavingPacs) -> None:
    pacs.script = ["silence"]
    pacs.start()
    outcomes = CStoreSender("DERMGATE", destination(pacs.port, dimse_timeout=1)).send_batch(
        requests(tmp_path, 1), threading.Event()
    )
    assert outcomes[0].verdict is Verdict.RETRYABLE


def test_unreachable_and_rejecting_peers_are_retryable(
    tmp_path: Path, pacs: MisbehavingPacs
) -> None:
    reqs = requests(tmp_path, 2)
    outcomes = CStoreSender("DERMGATE", destination(free_port())).send_batch(
        reqs, threading.Event()
    )
    assert all(o.verdict is Verdict.RETRYABLE and o.unreachable for o in outcomes)
    assert "could not open an association" in outcomes[0].detail
    pacs.start()
    pacs.server.ae.require_called_aet = True
    outcomes = CStoreSender("DERMGATE", destination(pacs.port, ae_title="WRONG")).send_batch(
        reqs, threading.Event()
    )
    assert all(o.verdict is Verdict.RETRYABLE for o in outcomes)
    assert "rejected" in outcomes[0].detail


def confocal_request(tmp_path: Path, spool_id: int) -> StoreRequest:
    """A small Part 10 file of the Confocal Microscopy class (no pixels: never sent)."""
    ds = Dataset()
    ds.SOPClassUID = CONFOCAL
    ds.SOPInstanceUID = new_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CONFOCAL
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path / f"confocal-{spool_id}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return StoreRequest(spool_id, path, CONFOCAL, str(ExplicitVRLittleEndian))


REFUSED_REASON = (
    "the PACS does not accept Confocal Microscopy Image Storage; set fallback or ask the "
    "PACS administrator to accept 1.2.840.10008.5.1.4.1.1.77.1.8"
)


def test_a_class_the_pacs_does_not_take_is_refused_and_the_rest_of_the_batch_sent(
    tmp_path: Path, pacs: MisbehavingPacs
) -> None:
    pacs.start()  # takes Dermoscopic Photography only
    derm = requests(tmp_path, 2)
    batch = [derm[0], confocal_request(tmp_path, 7), derm[1]]
    outcomes = CStoreSender("DERMGATE", destination(pacs.port)).send_batch(batch, threading.Event())
    assert [o.verdict for o in outcomes] == [Verdict.SUCCESS, Verdict.PERMANENT, Verdict.SUCCESS]
    refused = outcomes[1]
    assert refused.spool_id == 7
    assert not refused.unreachable
    assert refused.code is DeliveryErrorCode.NOT_ACCEPTED
    assert refused.detail == REFUSED_REASON
    assert len(pacs.received) == 2, "both dermoscopic images stored on that association"


def test_a_batch_of_refused_classes_only_is_refused_not_unreachable(
    tmp_path: Path, pacs: MisbehavingPacs
) -> None:
    """An SCP that accepts none of the proposed contexts answers, and pynetdicom aborts:
    a refusal of those classes, never a PACS to retry for ever."""
    pacs.start()
    outcomes = CStoreSender("DERMGATE", destination(pacs.port)).send_batch(
        [confocal_request(tmp_path, 1), confocal_request(tmp_path, 2)], threading.Event()
    )
    assert [o.verdict for o in outcomes] == [Verdict.PERMANENT, Verdict.PERMANENT]
    assert all(not o.unreachable and o.detail == REFUSED_REASON for o in outcomes)
    assert pacs.received == []


def test_a_class_taken_in_another_transfer_syntax_names_the_syntax(
    tmp_path: Path, pacs: MisbehavingPacs
) -> None:
    pacs.start()  # Dermoscopic Photography in JPEG Baseline only
    path, _ = make_dicom(tmp_path, 1)
    extended = StoreRequest(
        3, path, str(DermoscopicPhotographyImageStorage), "1.2.840.10008.1.2.4.51"
    )
    outcomes = CStoreSender("DERMGATE", destination(pacs.port)).send_batch(
        [requests(tmp_path, 1)[0], extended], threading.Event()
    )
    assert [o.verdict for o in outcomes] == [Verdict.SUCCESS, Verdict.PERMANENT]
    assert outcomes[1].detail == (
        "the PACS does not accept Dermoscopic Photography Image Storage in JPEG Extended "
        "(Process 2 and 4); ask the PACS administrator to accept "
        "1.2.840.10008.5.1.4.1.1.77.1.7 in 1.2.840.10008.1.2.4.51"
    )


def test_stop_finishes_the_instance_in_flight_and_releases(
    tmp_path: Path, pacs: MisbehavingPacs
) -> None:
    stop = threading.Event()
    released = threading.Event()
    pacs.start()
    pacs.server.bind(evt.EVT_RELEASED, lambda event: released.set())
    original = pacs.handle_store

    def store_then_stop(event: Any) -> Any:
        stop.set()
        return original(event)

    pacs.server.unbind(evt.EVT_C_STORE, pacs.handle_store)
    pacs.server.bind(evt.EVT_C_STORE, store_then_stop)
    outcomes = CStoreSender("DERMGATE", destination(pacs.port)).send_batch(
        requests(tmp_path, 3), stop
    )
    assert [o.verdict for o in outcomes] == [
        Verdict.SUCCESS,
        Verdict.NOT_ATTEMPTED,
        Verdict.NOT_ATTEMPTED,
    ]
    assert released.wait(5), "the association is released, not aborted"
