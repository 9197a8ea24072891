"""C-STORE of a large object keeps the sender's memory flat (DESIGN §6, "Large objects").

The sender runs in a child process that reports its own peak resident set size,
``VmHWM`` from ``/proc/self/status``, as it ends. (Not ``ru_maxrss``: Linux carries
the parent's peak across ``fork``/``exec`` into the child's, so it would measure
pytest.) A ~256 MB Dermoscopic Photography object
goes to a real Orthanc; without back-pressure pynetdicom's peak grew by 50-180 MB
for this size (and by ~480 MB for 1 GB); the gateway's own P-DATA writer holds one
1 MiB burst at a time. No timing is asserted; the time limits only catch a hang.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import pytest
from pydicom.filereader import read_file_meta_info

from gateway.core.capture import CaptureOffer, InstanceUIDs
from gateway.core.uids import new_uid
from gateway.demo.local_orthanc import ORTHANC_BINARY, OrthancProcess
from gateway.dicom.dermoscopy import build_dermoscopic_photography
from gateway.dicom.jpeg import read_jpeg_info
from gateway.dicom.part10 import write_part10_encapsulated
from tests.support.dicom_files import DEVICE, GATEWAY, make_dicom, make_jpeg

LARGE_BYTES = 256 * 1024 * 1024
PEAK_LIMIT_MB = 150
GROWTH_LIMIT_MB = 32  # a burst is 1 MiB (read, then joined); the rest is allocator slack
CHILD_TIMEOUT = 90.0

# The sender, alone in a child process: one instance, one outcome as JSON on stdout.
SENDER = """
import json, sys, threading
from pathlib import Path
from gateway.core.config import DicomDestination
from gateway.forward.cstore import CStoreSender, StoreRequest
path, port, sop_class, syntax, timeout = sys.argv[1:]
destination = DicomDestination(
    name="pacs", kind="dicom", ae_title="ORTHANC", host="127.0.0.1", port=int(port),
    connect_timeout=5, acse_timeout=5, dimse_timeout=float(timeout),
    network_timeout=float(timeout),
)
request = StoreRequest(1, Path(path), sop_class, syntax)
[outcome] = CStoreSender("DERMGATE", destination).send_batch([request], threading.Event())
status = Path("/proc/self/status").read_text().splitlines()
[peak_kb] = [int(line.split()[1]) for line in status if line.startswith("VmHWM:")]
print(json.dumps({"verdict": outcome.verdict.value, "detail": outcome.detail, "peak_kb": peak_kb}))
"""


@dataclass(frozen=True)
class Instance:
    """A Part 10 file on disk and what the PACS is asked to match."""

    path: Path
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str

    @classmethod
    def of(cls, path: Path) -> Instance:
        meta = read_file_meta_info(path)
        return cls(
            path,
            str(meta.MediaStorageSOPInstanceUID),
            str(meta.MediaStorageSOPClassUID),
            str(meta.TransferSyntaxUID),
        )


@dataclass(frozen=True)
class ChildRun:
    """What one sender child reported, and its peak RSS."""

    verdict: str
    detail: str
    peak_mb: float


def write_large_dicom(folder: Path, size: int) -> Path:
    """A valid Dermoscopic Photography file of about ``size`` bytes, built as the gateway does.

    Its JPEG is a real one followed by padding after End Of Image (decoders stop
    there), kept sparse on disk. An 8-byte counter every 65,537 bytes makes every
    PDU's worth of padding different, so a lost, repeated or reordered fragment
    changes the digest.
    """
    jpeg = folder / "large.jpg"
    head = make_jpeg(11)
    with jpeg.open("wb") as out:
        out.write(head)
        out.truncate(size)
        for offset in range(len(head), size - 8, 65_537):
            out.seek(offset)
            out.write(struct.pack("<Q", offset))
    uids = InstanceUIDs(study=new_uid(), series=new_uid(), sop_instance=new_uid())
    dataset = build_dermoscopic_photography(
        identity=DEVICE,
        offer=CaptureOffer(device_capture_id="large-000001"),
        uids=uids,
        jpeg=read_jpeg_info(jpeg),
        gateway=GATEWAY,
        patient=None,
        now=datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
    )
    dest = folder / f"{uids.sop_instance}.dcm"
    write_part10_encapsulated(dataset, jpeg, dest)
    jpeg.unlink()
    return dest


def _read_exactly(stream: BinaryIO, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = stream.read(count - len(data))
        assert chunk, "file ended early"
        data += chunk
    return data


def data_set_digest(stream: BinaryIO) -> tuple[str, int]:
    """SHA-256 and length of a Part 10 file's data set, read in 1 MiB chunks.

    The File Meta Information is skipped: a PACS rewrites it (implementation UID,
    source AE title), while the data set must arrive byte for byte.
    """
    head = _read_exactly(stream, 144)  # preamble, "DICM", (0002,0000) UL <length>
    assert head[128:132] == b"DICM"
    assert head[132:138] == b"\x02\x00\x00\x00UL"
    (group_length,) = struct.unpack("<I", head[140:144])
    _read_exactly(stream, group_length)
    digest = hashlib.sha256()
    length = 0
    while chunk := stream.read(1 << 20):
        digest.update(chunk)
        length += len(chunk)
    return digest.hexdigest(), length


def start_sender(instance: Instance, port: int, timeout: float = 30.0) -> subprocess.Popen[str]:
    """Start the sender child for ``instance`` (``timeout``: its DIMSE and network timeouts)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            SENDER,
            str(instance.path),
            str(port),
            instance.sop_class_uid,
            instance.transfer_syntax_uid,
            str(timeout),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> ChildRun:
    """Wait for the sender child (failing the test if it hangs) and read its report."""
    try:
        output, _ = proc.communicate(timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"the sender did not return within {CHILD_TIMEOUT:.0f} s")
    assert proc.returncode == 0, output
    report = json.loads(output.strip().splitlines()[-1])
    return ChildRun(report["verdict"], report["detail"], report["peak_kb"] / 1024)


def send_in_child(instance: Instance, port: int) -> ChildRun:
    """Send ``instance`` from a child process; return its outcome and peak RSS."""
    return finish(start_sender(instance, port))


@pytest.fixture(scope="module")
def large_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    folder = tmp_path_factory.mktemp("large")
    path = write_large_dicom(folder, LARGE_BYTES)
    yield Instance.of(path)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[OrthancProcess]:
    """A private Orthanc whose storage is removed afterwards (pytest keeps tmp dirs)."""
    assert ORTHANC_BINARY.exists(), f"Orthanc not found at {ORTHANC_BINARY}: run scripts/setup.sh"
    server = OrthancProcess(tmp_path / "orthanc")
    server.start()
    yield server
    server.stop()
    shutil.rmtree(tmp_path / "orthanc" / "storage", ignore_errors=True)


def test_large_object_streams_with_flat_memory_and_arrives_intact(
    pacs: OrthancProcess, large_instance: Instance, tmp_path: Path
) -> None:
    small_path, _ = make_dicom(tmp_path, seed=5)
    baseline = send_in_child(Instance.of(small_path), pacs.dicom_port)
    assert baseline.verdict == "success", baseline.detail

    large = send_in_child(large_instance, pacs.dicom_port)
    assert large.verdict == "success", large.detail

    growth = large.peak_mb - baseline.peak_mb
    assert large.peak_mb < PEAK_LIMIT_MB, f"peak RSS {large.peak_mb:.0f} MB"
    assert growth < GROWTH_LIMIT_MB, (
        f"peak RSS {large.peak_mb:.0f} MB for {LARGE_BYTES >> 20} MiB against "
        f"{baseline.peak_mb:.0f} MB for a small object"
    )

    [orthanc_id] = pacs.find_instances(large_instance.sop_instance_uid)
    with urllib.request.urlopen(f"{pacs.url}/instances/{orthanc_id}/file", timeout=60) as body:
        stored = data_set_digest(body)
    with large_instance.path.open("rb") as local:
        sent = data_set_digest(local)
    assert stored == sent


def _bytes_read(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text(encoding="ascii").splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/PID/io")


def test_frozen_pacs_mid_transfer_is_retryable_not_a_hang(
    pacs: OrthancProcess, large_instance: Instance
) -> None:
    orthanc_process = pacs._proc
    assert orthanc_process is not None
    received_before = _bytes_read(orthanc_process.pid)
    proc = start_sender(large_instance, pacs.dicom_port, timeout=2.0)
    try:
        deadline = time.monotonic() + 30
        while _bytes_read(orthanc_process.pid) - received_before < 16 << 20:
            assert proc.poll() is None, "the sender ended before Orthanc had 16 MiB"
            assert time.monotonic() < deadline, "Orthanc never started receiving"
            time.sleep(0.02)
        orthanc_process.send_signal(signal.SIGSTOP)  # stops reading: the TCP window fills
        frozen = finish(proc)
    finally:
        orthanc_process.send_signal(signal.SIGCONT)
        if proc.returncode is None:
            proc.kill()
            proc.communicate()
    assert frozen.verdict == "retryable", frozen.detail
    assert frozen.peak_mb < PEAK_LIMIT_MB, f"peak RSS {frozen.peak_mb:.0f} MB"
