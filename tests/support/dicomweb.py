"""DICOMweb peers for tests: Orthanc with its DICOMweb plugin (optionally behind its
own Basic auth), a scripted STOW-RS/QIDO-RS store that misbehaves on purpose, and
a gateway configuration with a ``kind = "dicomweb"`` destination.

The scripted store is test scaffolding for answers Orthanc never gives (429 with
Retry-After, 413, an answer that leaves an instance out, Azure's "already stored");
it reads the multipart body as a store would (every part a Part 10 file, the study
in the URL checked) and serves QIDO-RS from what it really kept.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import struct
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
from aiohttp import BodyPartReader, web

from gateway.core.capture import CaptureOffer, InstanceUIDs
from gateway.core.uids import new_uid
from gateway.demo.local_orthanc import ORTHANC_BINARY, OrthancProcess, free_port
from gateway.dicom.dermoscopy import build_dermoscopic_photography
from gateway.dicom.jpeg import read_jpeg_info
from gateway.dicom.part10 import write_part10_encapsulated
from gateway.spool import ledger as db
from tests.support.dicom_files import DEVICE, GATEWAY, make_jpeg
from tests.support.spool import Spool

DICOMWEB_PLUGIN = "libOrthancDicomWeb.so"
_HEAD = 256 * 1024


@dataclass
class DicomwebOrthanc(OrthancProcess):
    """Orthanc with only the DICOMweb plugin; with ``users``, HTTP Basic auth on."""

    users: dict[str, str] = field(default_factory=dict)
    plugins: tuple[str, ...] = (DICOMWEB_PLUGIN,)

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb base URL (``url`` of a dicomweb destination)."""
        return f"{self.url}/dicom-web"

    def _config(self) -> dict[str, Any]:
        config = super()._config()
        config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/"}
        if self.users:
            config["AuthenticationEnabled"] = True
            config["RegisteredUsers"] = self.users
        return config

    def rest(self, method: str, path: str, body: Any = None, *, timeout: float = 10.0) -> Any:
        """Call the REST API (as the first registered user, if any)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if self.users:
            user, password = next(iter(self.users.items()))
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
            if "json" in response.headers.get("Content-Type", ""):
                return json.loads(payload)
            return payload

    def copies(self, sop_instance_uids: list[str]) -> dict[str, int]:
        """How many instances Orthanc keeps under each SOP Instance UID."""
        return {uid: len(self.find_instances(uid)) for uid in sop_instance_uids}


@pytest.fixture
def dicomweb_orthanc_factory(tmp_path: Path) -> Iterator[Callable[..., DicomwebOrthanc]]:
    """Start Orthanc DICOMweb stores (``users`` turns Basic auth on); stopped at the end."""
    assert ORTHANC_BINARY.exists(), f"Orthanc not found at {ORTHANC_BINARY}: run scripts/setup.sh"
    started: list[DicomwebOrthanc] = []

    def start(users: dict[str, str] | None = None, **extra: Any) -> DicomwebOrthanc:
        """One more store (``extra``: Orthanc configuration keys)."""
        server = DicomwebOrthanc(
            tmp_path / f"orthanc-web-{len(started)}", users=users or {}, extra=extra
        )
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def dicomweb_config(
    tmp_path: Path,
    url: str,
    *,
    destination: str = "",
    confirm: str = "read-back",
    devices: str | None = None,
) -> Path:
    """A gateway configuration whose only destination is a DICOMweb store at ``url``.

    ``destination`` adds keys to it (``auth``, ``username``, ``password_file``,
    timeouts); ``devices`` replaces the serial dermatoscope at ``tmp_path/ttyDERM0``.
    """
    link = tmp_path / "ttyDERM0"
    text = f"""
[gateway]
id = "test-box-01"
ae_title = "DERMGATE"
listen_port = {free_port()}
listen_address = "127.0.0.1"
state_dir = "{tmp_path / "state"}"
log_level = "DEBUG"

[context]
hold_unidentified = 0

[[destinations]]
name = "cloud"
kind = "dicomweb"
url = "{url}"
confirm = "{confirm}"
retry_initial = 0.5
retry_max = 2.0
connect_timeout = 3
request_timeout = 60
confirm_timeout = 10
{destination}
"""
    text += (
        devices
        if devices is not None
        else f"""
[[devices]]
driver = "serial-dermatoscope"
name = "scope"
port = "{link}"
stall_timeout = 5
reconnect_max = 1
"""
    )
    path = tmp_path / "dermgate.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _sequence(uids: list[str], reason_tag: str | None, reason: int | None) -> dict[str, Any]:
    items = []
    for uid in uids:
        item: dict[str, Any] = {
            "00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.77.1.4.1"]},
            "00081155": {"vr": "UI", "Value": [uid]},
        }
        if reason_tag is not None and reason is not None:
            item[reason_tag] = {"vr": "US", "Value": [reason]}
        items.append(item)
    return {"vr": "SQ", "Value": items}


@dataclass
class Post:
    """One STOW-RS request the store received."""

    at: float
    uids: list[str]
    content_type: str
    content_length: str | None
    digests: list[str] = field(default_factory=list)
    """SHA-256 of each part (the whole Part 10 file as sent)."""


@dataclass
class ScriptedStore:
    """A STOW-RS / QIDO-RS store whose answers follow ``script`` (one step per POST;
    "ok" once it is used up).

    Steps: ``ok`` store and list all; ``partial409`` store the first part, fail the
    others (0x0110), HTTP 409; ``omit`` store all but the last part and leave it out
    of the answer; ``lose`` list all as stored but keep none (read-back misses them);
    ``dup`` store all and answer 409 with Failed SOP reason 45070 (Azure's "already
    stored"); ``429`` answer 429 with ``Retry-After: retry_after``; ``401`` refuse.
    A request with more than ``max_parts`` parts is answered 413; one with a UID in
    ``refuse`` is answered 400 (Orthanc's answer to a bad part).
    """

    script: list[str] = field(default_factory=list)
    max_parts: int = 1000
    retry_after: str = "2"
    stored: Counter[str] = field(default_factory=Counter)
    kept: dict[str, set[str]] = field(default_factory=dict)
    posts: list[Post] = field(default_factory=list)
    qidos: int = 0
    unlisted: bool = False
    refuse: set[str] = field(default_factory=set)
    """SOP Instance UIDs answered as Orthanc answers a bad part: HTTP 400, the other
    parts stored and listed, the bad one in neither sequence."""
    """QIDO-RS lists nothing yet (a store slow to index what it stored)."""
    port: int = field(default_factory=free_port)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The store's DICOMweb base URL."""
        return f"http://127.0.0.1:{self.port}/dicomweb"

    async def start(self) -> None:
        """Listen on 127.0.0.1:``port``."""
        app = web.Application(client_max_size=1 << 30)
        app.router.add_post("/dicomweb/studies/{study}", self._stow)
        app.router.add_get("/dicomweb/studies/{study}/instances", self._qido)
        app.router.add_get("/dicomweb/studies", self._studies)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _stow(self, request: web.Request) -> web.Response:
        content_type = request.headers.get("Content-Type", "")
        study = request.match_info["study"]
        datasets = []
        digests = []
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            assert isinstance(part, BodyPartReader)
            head = bytearray()  # the attributes before the pixel data, for the UIDs
            digest = hashlib.sha256()
            while chunk := await part.read_chunk(1 << 16):
                digest.update(chunk)
                if len(head) < _HEAD:
                    head.extend(chunk[: _HEAD - len(head)])
            datasets.append(pydicom.dcmread(io.BytesIO(bytes(head)), stop_before_pixels=True))
            digests.append(digest.hexdigest())
        uids = [str(ds.SOPInstanceUID) for ds in datasets]
        self.posts.append(
            Post(
                time.monotonic(),
                uids,
                content_type,
                request.headers.get("Content-Length"),
                digests,
            )
        )
        if 'type="application/dicom"' not in content_type:
            return web.Response(status=415)
        if len(uids) > self.max_parts:
            return web.Response(status=413)
        if self.refuse & set(uids):  # as Orthanc: 400, the good parts stored and listed
            good = [uid for uid in uids if uid not in self.refuse]
            self._keep(study, good)
            answer = {"00081199": _sequence(good, None, None)}
            return web.json_response(answer, status=400, content_type="application/dicom+json")
        step = self.script.pop(0) if self.script else "ok"
        if step == "429":
            return web.Response(status=429, headers={"Retry-After": self.retry_after})
        if step == "401":
            return web.Response(status=401)
        mine = [str(ds.SOPInstanceUID) for ds in datasets if str(ds.StudyInstanceUID) == study]
        stored: list[str] = []
        failed: list[str] = []
        reason = 0x0110
        status = 200
        if step == "partial409":
            stored, failed, status = mine[:1], mine[1:], 409
        elif step == "omit":
            stored = mine[:-1]
        elif step == "dup":
            stored, failed, reason, status = [], mine, 45070, 409
            self._keep(study, mine)
        elif step == "lose":
            answer = {"00081199": _sequence(mine, None, None)}
            return web.json_response(answer, content_type="application/dicom+json")
        else:
            stored = mine
        self._keep(study, stored)
        answer = {"00081199": _sequence(stored, None, None)}
        if failed:
            answer["00081198"] = _sequence(failed, "00081197", reason)
        return web.json_response(answer, status=status, content_type="application/dicom+json")

    def _keep(self, study: str, uids: list[str]) -> None:
        for uid in uids:
            self.stored[uid] += 1
            self.kept.setdefault(study, set()).add(uid)

    async def _qido(self, request: web.Request) -> web.Response:
        self.qidos += 1
        kept = set() if self.unlisted else self.kept.get(request.match_info["study"], set())
        uids = sorted(kept)
        offset = int(request.query.get("offset", "0"))
        limit = int(request.query.get("limit", "1000"))
        page = [{"00080018": {"vr": "UI", "Value": [uid]}} for uid in uids[offset : offset + limit]]
        return web.json_response(page, content_type="application/dicom+json")

    async def _studies(self, request: web.Request) -> web.Response:
        return web.json_response([], content_type="application/dicom+json")


@pytest.fixture
async def scripted_store() -> AsyncIterator[ScriptedStore]:
    """A scripted DICOMweb store on a free loopback port."""
    store = ScriptedStore()
    await store.start()
    yield store
    await store.stop()


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` (every 50 ms) until true; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def add_wrapped(
    spool: Spool, study: str, *, destination: str = "pacs", size: int | None = None
) -> tuple[int, str, Path]:
    """Spool a WRAPPED Dermoscopic Photography capture of ``study`` for ``destination``;
    return its spool id, SOP Instance UID and Part 10 file.

    With ``size`` the JPEG is padded after its End Of Image to about that many bytes
    (sparse on disk; every 64 KiB differs, so a lost or repeated chunk shows in a digest).
    """
    spool.seed += 1
    uids = InstanceUIDs(study, new_uid(), new_uid())
    raw = spool.dirs.raw / f"{uids.sop_instance}.raw"
    head = make_jpeg(spool.seed)
    with raw.open("wb") as out:
        out.write(head)
        if size is not None:
            out.truncate(size)
            for offset in range(len(head), size - 8, 65_537):
                out.seek(offset)
                out.write(struct.pack("<Q", offset))
    offer = CaptureOffer(device_capture_id=f"web-{spool.seed:06d}")
    spool_id = db.insert_capture(
        spool.conn,
        driver="serial-dermatoscope",
        device=DEVICE,
        offer=offer,
        uids=uids,
        raw_name=raw.name,
        raw_size=raw.stat().st_size,
        raw_sha256="0" * 64,
    )
    dataset = build_dermoscopic_photography(
        identity=DEVICE,
        offer=offer,
        uids=uids,
        jpeg=read_jpeg_info(raw),
        gateway=GATEWAY,
        patient=None,
        now=datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
    )
    name = f"{uids.sop_instance}.dcm"
    write_part10_encapsulated(dataset, raw, spool.dirs.dicom / name)
    db.mark_wrapped(
        spool.conn,
        spool_id,
        dicom_name=name,
        sop_class_uid=str(dataset.SOPClassUID),
        transfer_syntax_uid=str(dataset.file_meta.TransferSyntaxUID),
        destinations=[destination],
        now=time.time(),
    )
    return spool_id, uids.sop_instance, spool.dirs.dicom / name


@contextlib.contextmanager
def store_in_thread(store: ScriptedStore) -> Iterator[ScriptedStore]:
    """Run ``store`` on an event loop of its own thread (for a gateway in a child
    process while the test waits synchronously)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="scripted-store", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(store.start(), loop).result(10)
        yield store
    finally:
        asyncio.run_coroutine_threadsafe(store.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
