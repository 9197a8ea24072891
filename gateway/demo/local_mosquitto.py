"""A private Mosquitto broker on loopback, for ``dermgate demo`` (and the tests).

Debian's ``/usr/sbin/mosquitto`` in the foreground with its own configuration file,
listening on 127.0.0.1 only, anonymous, without persistence unless asked. It can be
stopped and started again on the same port (the tests' broker outages).
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from gateway.demo.local_orthanc import free_port

MOSQUITTO_BINARY = Path("/usr/sbin/mosquitto")


@dataclass
class MosquittoProcess:
    """One Mosquitto broker process with its own configuration and log."""

    workdir: Path
    port: int = field(default_factory=free_port)
    persistent: bool = False
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """The broker's log file."""
        return self.workdir / "mosquitto.log"

    def config_lines(self) -> list[str]:
        """The broker's configuration; subclasses add listeners' security."""
        store = self.workdir / "store"
        store.mkdir(exist_ok=True)
        return [
            "per_listener_settings false",
            f"persistence {'true' if self.persistent else 'false'}",
            f"persistence_location {store}/",
            f"log_dest file {self.log_path}",
            "log_type all",
            # As root Mosquitto drops to user "mosquitto" and then cannot read files
            # in a root-owned work folder.
            "user root",
            f"listener {self.port} 127.0.0.1",
        ]

    def security_lines(self) -> list[str]:
        """Authentication and TLS of the listener: anonymous here."""
        return ["allow_anonymous true"]

    def start(self, timeout: float = 15.0) -> None:
        """Start the broker and wait until it accepts connections."""
        if not MOSQUITTO_BINARY.exists():
            raise RuntimeError(f"{MOSQUITTO_BINARY} is missing: install Debian's mosquitto")
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        lines = self.config_lines() + self.security_lines()
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.proc = subprocess.Popen(
            [str(MOSQUITTO_BINARY), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on port {self.port}: {self.log()}")

    def stop(self) -> None:
        """Stop the broker (clients see the connection drop)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        """The end of the broker's log."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
        except OSError:
            return "(no log)"
