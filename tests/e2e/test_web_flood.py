"""The page under a connection flood, against a real ``dermgate run`` under the
descriptor limit systemd gives a service (``ulimit -n 1024``), over real TLS.

Hundreds of real TLS connections with incomplete requests (and plain TCP ones that
never finish the TLS handshake), from many client addresses and re-opened as soon as
the page drops them, must not stop intake: a photo dropped in the photo folder still
reaches the PACS (real Orthanc) and is COMMITTED, the log stays a few lines, and the
page answers a fresh client once the flood's connections are timed out or refused.
One client address gets at most its own share of the connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import ssl
from collections.abc import Callable
from pathlib import Path

from drivers.photo_folder import simulator as camera
from gateway.demo.local_orthanc import OrthancProcess, free_port
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.photo_folder import photo_folder_toml
from tests.support.state import states
from tests.support.waiting import wait_for
from tests.support.web import PASSWORD, client_tls, self_signed, user_add

FLOOD_TLS = 1000  # TLS connections with an incomplete request
FLOOD_RAW = 100  # TCP connections that never finish the TLS handshake
FLOOD_SOURCES = 40  # client addresses 127.0.0.10..: each under the per-client cap


def _raise_own_nofile(wanted: int = 8192) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _web_section(port: int, cert: Path, key: Path, request_timeout: float) -> str:
    return (
        f'\n[web]\nlisten = "127.0.0.1:{port}"\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
        f"request_timeout = {request_timeout}\n"
    )


async def _get(
    port: int, ctx: ssl.SSLContext, path: str, source: str = "127.0.0.1", timeout: float = 10
) -> bytes:
    """One HTTPS GET on a fresh connection from ``source``; the whole raw answer."""

    async def exchange() -> bytes:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, local_addr=(source, 0)
        )
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
                .encode()
            )  # fmt: skip
            return await reader.read()
        finally:
            writer.transport.abort()

    return await asyncio.wait_for(exchange(), timeout)


async def _answers(port: int, ctx: ssl.SSLContext, path: str, source: str = "127.0.0.1") -> bytes:
    with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
        return await _get(port, ctx, path, source)
    return b""


class Flood:
    """Connections that never complete a request, re-opened when the page drops them."""

    def __init__(self, port: int, ctx: ssl.SSLContext) -> None:
        self.port = port
        self.ctx = ctx
        self.reopen = True
        self.held: set[asyncio.StreamWriter] = set()
        self.opened = 0
        self.tasks: list[asyncio.Task[None]] = []

    async def _one(self, source: str, tls: bool) -> None:
        while True:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        "127.0.0.1", self.port, ssl=self.ctx if tls else None,
                        local_addr=(source, 0), ssl_handshake_timeout=60 if tls else None,
                    ),
                    60,
                )  # fmt: skip
            except (OSError, TimeoutError, ssl.SSLError):
                await asyncio.sleep(0.5)
                if not self.reopen:
                    return
                continue
            self.opened += 1
            self.held.add(writer)
            try:
                # An incomplete request head, or half a TLS record header.
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n" if tls else b"\x16\x03")
                while await reader.read(4096):
                    pass
            except (OSError, ssl.SSLError):
                pass
            finally:
                self.held.discard(writer)
                writer.transport.abort()
            if not self.reopen:
                return
            await asyncio.sleep(0.2)

    def start(self) -> None:
        """Open every connection (from many client addresses)."""
        for i in range(FLOOD_TLS + FLOOD_RAW):
            source = f"127.0.0.{10 + i % FLOOD_SOURCES}"
            self.tasks.append(asyncio.create_task(self._one(source, i < FLOOD_TLS)))

    async def stop(self) -> None:
        """Close everything still open."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for writer in list(self.held):
            writer.transport.abort()


async def _until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        await asyncio.sleep(0.5)


def test_a_tls_connection_flood_on_the_page_does_not_stop_intake(
    tmp_path: Path, orthanc: OrthancProcess
) -> None:
    _raise_own_nofile()
    cert, key = self_signed(tmp_path)
    ctx = client_tls(cert)
    folder = tmp_path / "photos"
    folder.mkdir()
    port = free_port()
    config = gateway_config(
        tmp_path,
        pacs_port=orthanc.dicom_port,
        commit_via=orthanc,
        devices=photo_folder_toml(folder),
    )
    with config.open("a", encoding="utf-8") as fh:
        fh.write(_web_section(port, cert, key, request_timeout=3))
    user_add(config, "tech", PASSWORD)
    gateway = GatewayProcess(config, tmp_path / "gateway.log")
    gateway.start()
    try:
        gateway.wait_running()
        wait_for(lambda: asyncio.run(_answers(port, ctx, "/healthz")), 30, "the page")
        state_dir = tmp_path / "state"

        async def scenario() -> None:
            flood = Flood(port, ctx)
            flood.start()
            try:
                await _until(lambda: flood.opened >= 1000, 120, "the flood to open")
                lines_before = gateway.log().count("\n")
                # Intake keeps working while the page is flooded.
                photo = camera.make_photo(1, width=320, height=240)
                staging = tmp_path / "IMG_0001.JPG"
                staging.write_bytes(photo)
                os.rename(staging, folder / "IMG_0001.JPG")
                await _until(lambda: states(state_dir) == ["COMMITTED"], 90, "the photo COMMITTED")
                flooded = gateway.log().splitlines()[lines_before:]
                assert len(flooded) < 50, "\n".join(flooded[-60:])
                # The flood stops re-opening; what it holds is timed out or refused,
                # and then a fresh client gets an answer.
                flood.reopen = False
                await _until(
                    lambda: all(t.done() for t in flood.tasks),
                    90,
                    "the page to drop the flood's connections",
                )
                answer = await _get(port, ctx, "/healthz")
                assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
                assert answer.endswith(b"\r\n\r\nok\n")
            finally:
                await flood.stop()
            # After the flood the page works as before.
            login = await _get(port, ctx, "/login")
            assert login.startswith(b"HTTP/1.1 200"), login[:200]

        asyncio.run(scenario())
        log = gateway.log()
        assert "Traceback" not in log
        assert "Too many open files" not in log
        assert gateway.stop() == 0
    finally:
        if gateway.proc is not None and gateway.proc.poll() is None:
            gateway.kill()
        gateway.close_logs()


def test_one_client_address_gets_only_its_share_of_connections(tmp_path: Path) -> None:
    """Past the per-client cap a connection is closed at once (not after the request
    timeout), while another client is served."""
    _raise_own_nofile()
    cert, key = self_signed(tmp_path)
    ctx = client_tls(cert)
    port = free_port()
    config = gateway_config(tmp_path, pacs_port=free_port(), devices="")
    with config.open("a", encoding="utf-8") as fh:
        fh.write(_web_section(port, cert, key, request_timeout=120))
    gateway = GatewayProcess(config, tmp_path / "gateway.log")
    gateway.start()
    try:
        gateway.wait_running()
        wait_for(lambda: asyncio.run(_answers(port, ctx, "/healthz")), 30, "the page")

        async def scenario() -> None:
            flood = Flood(port, ctx)
            flood.reopen = False
            for _ in range(48):
                flood.tasks.append(asyncio.create_task(flood._one("127.0.0.5", True)))
            try:
                await _until(
                    lambda: sum(t.done() for t in flood.tasks) >= 16,
                    60,
                    "the 16 connections past the cap to be closed",
                )
                assert sum(not t.done() for t in flood.tasks) == 32, "32 stay open"
                answer = await _get(port, ctx, "/healthz", source="127.0.0.6")
                assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
            finally:
                await flood.stop()

        asyncio.run(scenario())
        assert gateway.stop() == 0
    finally:
        if gateway.proc is not None and gateway.proc.poll() is None:
            gateway.kill()
        gateway.close_logs()
