"""What the C-STORE writer puts on the wire (gateway/forward/stream.py), byte for byte.

The gateway writes a C-STORE's P-DATA-TF PDUs itself, many per socket write. A
recording TCP relay sits between the sender and a real pynetdicom storage SCP and
keeps every byte the sender wrote; the PDUs in it must be exactly those pynetdicom
itself sends for the same files, never longer than the SCP's maximum PDU length, and
the association must end with A-RELEASE, not A-ABORT. Over TLS (an ``ssl.SSLSocket``
shared by the writer and pynetdicom's reactor) an object of several bursts must reach
a TLS-only Orthanc intact.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import struct
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pynetdicom import AE, evt
from pynetdicom.sop_class import DermoscopicPhotographyImageStorage

from gateway.core.capture import CaptureOffer, InstanceUIDs
from gateway.core.config import DicomDestination
from gateway.core.uids import new_uid
from gateway.dicom.dermoscopy import build_dermoscopic_photography
from gateway.dicom.jpeg import read_jpeg_info
from gateway.dicom.part10 import write_part10_encapsulated
from gateway.forward.cstore import CStoreSender, StoreRequest, Verdict
from gateway.forward.stream import BURST, MAX_FRAGMENT, stream_c_store
from tests.support.dicom_files import DEVICE, GATEWAY, make_dicom, make_jpeg
from tests.support.dicom_tls import make_pki, tls_orthanc
from tests.support.peers import JPEG_BASELINE

P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_ABORT = 0x07


class RecordingRelay:
    """Relays TCP connections to ``upstream``; keeps what each client sent."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sent: list[bytearray] = []
        self._threads: list[threading.Thread] = []
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            record = bytearray()
            self.sent.append(record)
            relay = threading.Thread(target=self._relay, args=(client, record), daemon=True)
            relay.start()
            self._threads.append(relay)

    def _relay(self, client: socket.socket, record: bytearray) -> None:
        with client, socket.create_connection(("127.0.0.1", self.upstream)) as server:
            back = threading.Thread(target=self._pump, args=(server, client, None), daemon=True)
            back.start()
            self._pump(client, server, record)
            back.join(10)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, record: bytearray | None) -> None:
        try:
            while data := src.recv(65536):
                if record is not None:
                    record.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def wait(self) -> None:
        for pump in self._threads:
            pump.join(10)

    def close(self) -> None:
        self.listener.close()


def pdus(stream: bytes) -> list[bytes]:
    """Split a DICOM upper-layer byte stream into its PDUs."""
    out = []
    at = 0
    while at < len(stream):
        (length,) = struct.unpack(">I", stream[at + 2 : at + 6])
        out.append(bytes(stream[at : at + 6 + length]))
        at += 6 + length
    assert at == len(stream), "the stream ends inside a PDU"
    return out


@pytest.fixture
def scp_factory() -> Iterator[Any]:
    servers: list[Any] = []

    def start(max_pdu: int) -> tuple[int, list[bytes]]:
        stored: list[bytes] = []

        def on_store(event: Any) -> int:
            stored.append(bytes(event.request.DataSet.getvalue()))
            return 0x0000

        ae = AE(ae_title="RECORDER")
        ae.maximum_pdu_size = max_pdu
        ae.add_supported_context(DermoscopicPhotographyImageStorage, [JPEG_BASELINE])
        server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
        )
        servers.append(server)
        return server.server_address[1], stored

    yield start
    for server in servers:
        server.shutdown()


def large_dicom(folder: Path, seed: int, size: int) -> Path:
    """A valid Dermoscopic Photography file of about ``size`` bytes: a real JPEG
    followed by random padding after its End Of Image (decoders stop there)."""
    jpeg = folder / f"large-{seed}.jpg"
    head = make_jpeg(seed)
    jpeg.write_bytes(head + os.urandom(size - len(head)))
    uids = InstanceUIDs(study=new_uid(), series=new_uid(), sop_instance=new_uid())
    dataset = build_dermoscopic_photography(
        identity=DEVICE,
        offer=CaptureOffer(device_capture_id=f"large-{seed}"),
        uids=uids,
        jpeg=read_jpeg_info(jpeg),
        gateway=GATEWAY,
        patient=None,
        now=datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
    )
    dest = folder / f"{uids.sop_instance}.dcm"
    write_part10_encapsulated(dataset, jpeg, dest)
    return dest


def destination(port: int) -> DicomDestination:
    return DicomDestination(
        name="pacs",
        kind="dicom",
        ae_title="RECORDER",
        host="127.0.0.1",
        port=port,
        connect_timeout=5,
        acse_timeout=5,
        dimse_timeout=10,
        network_timeout=10,
    )


def send_as_pynetdicom_does(port: int, files: list[Path]) -> None:
    """pynetdicom's own C-STORE of ``files``, one association, from the files."""
    ae = AE(ae_title="DERMGATE")
    ae.add_requested_context(DermoscopicPhotographyImageStorage, [JPEG_BASELINE])
    assoc = ae.associate("127.0.0.1", port, ae_title="RECORDER")
    assert assoc.is_established
    for path in files:
        status = assoc.send_c_store(path)
        assert status.Status == 0x0000
    assoc.release()


@pytest.mark.parametrize("max_pdu", [16384, 5003, 0])
def test_the_pdus_written_are_pynetdicoms_and_fit_the_peers_maximum(
    tmp_path: Path, scp_factory: Any, max_pdu: int
) -> None:
    files = [
        large_dicom(tmp_path, 1, 2 * BURST + 12_345),  # spans bursts, ends mid-burst
        make_dicom(tmp_path, 2)[0],  # smaller than one PDU at 16 KiB
    ]
    port, stored = scp_factory(max_pdu)
    relay = RecordingRelay(port)
    try:
        requests = [
            StoreRequest(i, path, str(DermoscopicPhotographyImageStorage), JPEG_BASELINE)
            for i, path in enumerate(files)
        ]
        outcomes = CStoreSender("DERMGATE", destination(relay.port)).send_batch(
            requests, threading.Event()
        )
        assert [o.verdict for o in outcomes] == [Verdict.SUCCESS, Verdict.SUCCESS]
        send_as_pynetdicom_does(relay.port, files)
        relay.wait()
    finally:
        relay.close()

    ours, theirs = (pdus(bytes(stream)) for stream in relay.sent)
    assert ours[-1][0] == A_RELEASE_RQ, "the association is released"
    assert all(pdu[0] != A_ABORT for pdu in ours)
    ours_data = [pdu for pdu in ours if pdu[0] == P_DATA_TF]
    theirs_data = [pdu for pdu in theirs if pdu[0] == P_DATA_TF]
    limit = min(max_pdu, MAX_FRAGMENT) if max_pdu else MAX_FRAGMENT
    assert max(len(pdu) - 6 for pdu in ours_data) <= limit
    if max_pdu:
        assert ours_data == theirs_data  # byte for byte, PDU for PDU
    else:  # unlimited: pynetdicom sends one PDU per data set, we cap at MAX_FRAGMENT
        assert b"".join(p[12:] for p in ours_data) == b"".join(p[12:] for p in theirs_data)
    assert stored[:2] == stored[2:], "the SCP received the same data sets both ways"
    assert len(stored) == 4


def test_a_data_set_held_in_memory_goes_out_the_same_way(tmp_path: Path, scp_factory: Any) -> None:
    """``send_c_store(dataset)`` (not from a file) on a streamed association: the
    same PDUs as pynetdicom's, and the association released."""
    path = large_dicom(tmp_path, 3, BURST + 777)
    port, stored = scp_factory(16384)
    relay = RecordingRelay(port)
    try:
        for streamed in (True, False):
            ae = AE(ae_title="DERMGATE")
            ae.add_requested_context(DermoscopicPhotographyImageStorage, [JPEG_BASELINE])
            assoc = ae.associate("127.0.0.1", relay.port, ae_title="RECORDER")
            assert assoc.is_established
            if streamed:
                stream_c_store(assoc, stall_timeout=10)
            status = assoc.send_c_store(dcmread(path))
            assert status.Status == 0x0000
            assoc.release()
        relay.wait()
    finally:
        relay.close()
    ours, theirs = (pdus(bytes(stream)) for stream in relay.sent)
    assert ours[-1][0] == A_RELEASE_RQ
    assert [p for p in ours if p[0] == P_DATA_TF] == [p for p in theirs if p[0] == P_DATA_TF]
    assert len(stored) == 2
    assert stored[0] == stored[1]


def test_a_large_object_over_tls_arrives_intact_and_the_association_is_released(
    tmp_path: Path,
) -> None:
    """Several 1 MiB bursts through an ``ssl.SSLSocket`` to a TLS-only Orthanc: the
    writer and the DUL never use the TLS object at once, and the PACS stores the
    same bytes."""
    pki = make_pki(tmp_path / "pki")
    server = tls_orthanc(tmp_path / "orthanc", pki)
    server.start()
    try:
        path = large_dicom(tmp_path, 4, 3 * BURST + 4321)
        tls = {"tls": True, "tls_ca": pki.ca, "tls_cert": pki.cert("gateway")}
        target = DicomDestination(
            name="pacs",
            kind="dicom",
            ae_title=server.aet,
            host="127.0.0.1",
            port=server.dicom_port,
            tls_key=pki.key("gateway"),
            **tls,
        )
        request = StoreRequest(1, path, str(DermoscopicPhotographyImageStorage), JPEG_BASELINE)
        [outcome] = CStoreSender("DERMGATE", target).send_batch([request], threading.Event())
        assert outcome.verdict is Verdict.SUCCESS, outcome.detail
        sop_instance = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        [orthanc_id] = server.find_instances(sop_instance)
        with urllib.request.urlopen(f"{server.url}/instances/{orthanc_id}/file", timeout=30) as r:
            stored = dcmread(io.BytesIO(r.read()))
        assert stored.PixelData == dcmread(path).PixelData
    finally:
        server.stop()


def test_a_handler_bound_to_dimse_sent_still_sees_every_c_store_request(
    tmp_path: Path, scp_factory: Any
) -> None:
    """With an ``EVT_DIMSE_SENT`` handler bound, the writer builds pynetdicom's own
    message for it; the bytes on the wire are the same either way."""
    path = large_dicom(tmp_path, 5, BURST // 2)
    port, stored = scp_factory(16384)
    seen: list[str] = []

    def on_sent(event: Any) -> None:
        seen.append(str(event.message.command_set.AffectedSOPInstanceUID))

    relay = RecordingRelay(port)
    try:
        for handlers in ([(evt.EVT_DIMSE_SENT, on_sent)], []):
            ae = AE(ae_title="DERMGATE")
            ae.add_requested_context(DermoscopicPhotographyImageStorage, [JPEG_BASELINE])
            assoc = ae.associate(
                "127.0.0.1", relay.port, ae_title="RECORDER", evt_handlers=handlers
            )
            assert assoc.is_established
            stream_c_store(assoc, stall_timeout=10)
            assert assoc.send_c_store(path).Status == 0x0000
            assoc.release()
        relay.wait()
    finally:
        relay.close()
    assert seen == [str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)]
    with_handler, without = (pdus(bytes(stream)) for stream in relay.sent)
    assert [p for p in with_handler if p[0] == P_DATA_TF] == [
        p for p in without if p[0] == P_DATA_TF
    ]
    assert len(stored) == 2
