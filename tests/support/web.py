"""Helpers for tests of the local page: a config with [web], users, a served app, the
CLI that manages logins, TLS certificates, and a spool seeded with one capture to show."""

from __future__ import annotations

import contextlib
import re
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from gateway.core.capture import CaptureOffer, DeviceIdentity, InstanceUIDs
from gateway.core.config import DermGateConfig
from gateway.demo.local_orthanc import free_port
from gateway.service.config import parse_config
from gateway.spool import ledger as db
from gateway.spool.dirs import SpoolDirs
from gateway.status.web.server import WebServer
from gateway.status.web.users import Users

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def web_config(tmp_path: Path, web_keys: str = "", pacs_port: int | None = None) -> DermGateConfig:
    """A gateway configuration with a [web] section on a free loopback port."""
    text = f"""
[gateway]
id = "web-test"
state_dir = "{tmp_path / "state"}"
listen_address = "127.0.0.1"
listen_port = {free_port()}

[[destinations]]
name = "pacs"
kind = "dicom"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = {pacs_port or free_port()}
connect_timeout = 2

[web]
listen = "127.0.0.1:{free_port()}"
{web_keys}
"""
    path = tmp_path / "dermgate.toml"
    path.write_text(text, encoding="utf-8")
    return parse_config(text, path)


def add_user(config: DermGateConfig, name: str = "tech", password: str = PASSWORD) -> None:
    """Store a login the way `dermgate user add` does."""
    users = Users.load(config.users_path())
    users.set_password(name, password)
    users.save(config.users_path())


def csrf_of(html: str) -> str:
    """The CSRF token in a page's first form."""
    match = _CSRF.search(html)
    assert match, "no CSRF field in the page"
    return match.group(1)


@contextlib.asynccontextmanager
async def served(server: WebServer) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """Run ``server``'s app on its configured port; yield (base URL, client session)."""
    runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    host, port = server.web.host_port()
    site = web.TCPSite(runner, host, port)
    await site.start()
    jar = aiohttp.CookieJar(unsafe=True)  # keep cookies for 127.0.0.1
    try:
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            yield f"http://{host}:{port}", session
    finally:
        await runner.cleanup()


async def login(
    session: aiohttp.ClientSession, base: str, user: str = "tech", password: str = PASSWORD
) -> aiohttp.ClientResponse:
    """Fetch the login form and post it; returns the final response (after redirects)."""
    async with session.get(f"{base}/login") as page:
        token = csrf_of(await page.text())
    response = await session.post(
        f"{base}/login", data={"csrf": token, "user": user, "password": password}
    )
    await response.read()
    return response


def service_config(tmp_path: Path) -> tuple[Path, str]:
    """A gateway with the page on, no devices, a PACS nobody listens on."""
    port = free_port()
    text = f"""
[gateway]
id = "web-service-test"
state_dir = "{tmp_path / "state"}"
listen_address = "127.0.0.1"
listen_port = {free_port()}
log_level = "DEBUG"

[[destinations]]
name = "pacs"
kind = "dicom"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = {free_port()}
connect_timeout = 2

[web]
listen = "127.0.0.1:{port}"
"""
    path = tmp_path / "dermgate.toml"
    path.write_text(text, encoding="utf-8")
    return path, f"http://127.0.0.1:{port}"


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``dermgate ARGS`` with ``stdin``; never raises on a failing exit code."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        input=stdin, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def user_add(config: Path, name: str, password: str) -> None:
    """``dermgate user add NAME`` with ``password`` on stdin; it must succeed."""
    result = run_cli("user", "add", name, "--config", str(config), "--password-stdin",
                  stdin=password + "\n")  # fmt: skip
    assert result.returncode == 0, result.stderr


def cookie_client() -> aiohttp.ClientSession:
    """An HTTP client that keeps the page's cookies for 127.0.0.1."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def login_status(session: aiohttp.ClientSession, base: str, user: str, password: str) -> int:
    """Log in through the login form; return the answer's HTTP status."""
    async with session.get(f"{base}/login") as page:
        token = csrf_of(await page.text())
    async with session.post(
        f"{base}/login",
        data={"csrf": token, "user": user, "password": password},
        allow_redirects=False,
    ) as r:
        await r.read()
        return r.status


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A throw-away self-signed certificate and key for 127.0.0.1 (EC P-256)."""
    cert, key = tmp_path / "page.crt", tmp_path / "page.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "30", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out",
         str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def client_tls(cert: Path) -> ssl.SSLContext:
    """A client TLS context that trusts ``cert`` and does not check the host name."""
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    return ctx


#: The patient in the DICOM file of the capture ``seed_spool`` writes (the page masks it).
SEEDED_NAME, SEEDED_PID, SEEDED_BIRTH = "Doe^Janet", "PID-778899", "19610203"


_SEED_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.4"


def seed_spool(config: DermGateConfig) -> tuple[int, int]:
    """One WRAPPED capture with patient data in its DICOM file, one QUARANTINED."""
    dirs = SpoolDirs(config.spool_dir())
    dirs.create()
    conn = db.open_ledger(config.ledger_path())
    ids = []
    for n in (1, 2):
        uids = InstanceUIDs(f"1.2.3.{n}.1", f"1.2.3.{n}.2", f"1.2.3.{n}.3")
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = _SEED_SOP_CLASS
        ds.file_meta.MediaStorageSOPInstanceUID = uids.sop_instance
        ds.SOPClassUID, ds.SOPInstanceUID = _SEED_SOP_CLASS, uids.sop_instance
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = SEEDED_NAME, SEEDED_PID, SEEDED_BIRTH
        name = f"{uids.sop_instance}.dcm"
        ds.save_as(dirs.dicom / name, enforce_file_format=True)
        ids.append(
            db.insert_capture(
                conn,
                driver="scanner-export",
                device=DeviceIdentity("Acme", "Scan 3", f"SN{n}", ("1.0",)),
                offer=CaptureOffer(device_capture_id=f"c{n}"),
                uids=uids,
                raw_name="",
                raw_size=1,
                raw_sha256="0" * 64,
                wrapped=db.WrappedAtIntake(
                    name, _SEED_SOP_CLASS, ExplicitVRLittleEndian, ("pacs",)
                ),
            )
        )
    db.quarantine(conn, ids[1], "the PACS does not accept this kind of object")
    conn.close()
    return ids[0], ids[1]
