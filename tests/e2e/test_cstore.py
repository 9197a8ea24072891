"""The C-STORE seam against real pynetdicom SCPs that misbehave on purpose."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pynetdicom import evt
from pynetdicom.sop_class import DermoscopicPhotographyImageStorage

from gateway.core.config import DicomDestination
from gateway.demo.local_orthanc import free_port
from gateway.forward.cstore import CStoreSender, StoreRequest, Verdict
from tests.support.dicom_files import make_dicom
from tests.support.peers import JPEG_BASELINE, MisbehavingPacs


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


def test_pacs_without_the_sop_class_is_permanent(tmp_path: Path, pacs: MisbehavingPacs) -> None:
    pacs.start(accept_dermoscopy=False)
    outcomes = CStoreSender("DERMGATE", destination(pacs.port)).send_batch(
        requests(tmp_path, 1), threading.Event()
    )
    # An SCP that accepts none of the proposed contexts aborts the association, so
    # the instance stays pending (retried with backoff) with the reason visible.
    assert outcomes[0].verdict is Verdict.RETRYABLE
    assert "could not open an association" in outcomes[0].detail
    assert pacs.received == []


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
