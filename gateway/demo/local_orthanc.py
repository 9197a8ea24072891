"""A private Orthanc PACS on free loopback ports (for ``dermgate demo`` and tests).

Runs Debian's ``/usr/sbin/Orthanc`` in the foreground with a generated
configuration. Orthanc has no bind-address option: its DICOM and HTTP ports listen
on all interfaces; we only ever connect through 127.0.0.1 and leave HTTP with
``RemoteAccessAllowed: false``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ORTHANC_BINARY = Path(os.environ.get("DERMGATE_ORTHANC", "/usr/sbin/Orthanc"))
PLUGIN_DIR = Path("/usr/share/orthanc/plugins")


_HANDED_OUT: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    """True if ``port`` can be listened on, on every address, right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port that is free right now, and not handed out before by this process.

    Chosen below the kernel's ephemeral range: a port from that range (``bind(0)``)
    can be taken by any outgoing connection (a C-STORE, an HTTP request, a test's
    flood of clients) between the moment it is handed out and the moment Orthanc or
    the gateway binds it ("Address already in use"). Two ports taken in a row, such
    as Orthanc's HTTP and DICOM ports, always differ.
    """
    low, _ = _ephemeral_range()
    first = 10000 if low > 12000 else 1024
    for _ in range(1000):
        port = random.randrange(first, low)
        if port not in _HANDED_OUT and _bindable(port):
            _HANDED_OUT.add(port)
            return port
    for _ in range(1000):  # a crowded machine: fall back to the kernel's choice
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            break
    _HANDED_OUT.add(port)
    return port


@dataclass
class OrthancProcess:
    """One Orthanc server with its own storage under ``workdir``."""

    workdir: Path
    aet: str = "ORTHANC"
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    modalities: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    plugins: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    _proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the REST API."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        """Orthanc's console output."""
        return self.workdir / "orthanc.log"

    def _config(self) -> dict[str, Any]:
        plugin_links = self.workdir / "plugins"
        plugin_links.mkdir(parents=True, exist_ok=True)
        for name in self.plugins:
            link = plugin_links / name
            if not link.exists():
                link.symlink_to(PLUGIN_DIR / name)
        config: dict[str, Any] = {
            "Name": "DermGate private PACS",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "UnknownSopClassAccepted": True,
            "StorageCompression": False,
            "DicomModalities": {
                name: [aet, host, port] for name, (aet, host, port) in self.modalities.items()
            },
            "Plugins": [str(plugin_links)],
            "ConcurrentJobs": 2,
        }
        config.update(self.extra)
        return config

    def start(self, timeout: float = 30.0) -> None:
        """Start Orthanc and wait until its REST API answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "orthanc.json"
        config_path.write_text(json.dumps(self._config(), indent=2), encoding="utf-8")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [str(ORTHANC_BINARY), str(config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self.stop()  # closes the log
                raise RuntimeError(f"Orthanc exited at start-up; see {self.log_path}")
            with contextlib.suppress(OSError):
                self.rest("GET", "/system")
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL after 15 s)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL Orthanc (a crash, for tests)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def rest(self, method: str, path: str, body: Any = None, *, timeout: float = 10.0) -> Any:
        """Call the REST API; JSON in and out (raw bytes for non-JSON answers)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
            if "json" in response.headers.get("Content-Type", ""):
                return json.loads(payload)
            return payload

    def find_instances(self, sop_instance_uid: str) -> list[str]:
        """Orthanc ids of the instances with this SOP Instance UID (0 or 1 normally)."""
        found = self.rest(
            "POST",
            "/tools/find",
            {"Level": "Instance", "Query": {"SOPInstanceUID": sop_instance_uid}},
        )
        return [str(x) for x in found]

    def instance_file(self, orthanc_id: str) -> bytes:
        """The stored Part 10 file of one instance."""
        data = self.rest("GET", f"/instances/{orthanc_id}/file")
        assert isinstance(data, bytes)
        return data

    def count_instances(self) -> int:
        """How many instances Orthanc stores."""
        return int(self.rest("GET", "/statistics")["CountInstances"])
