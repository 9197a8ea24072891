"""Ports for the private peers (the demo's and the tests' Orthanc, Mosquitto, pages)."""

from __future__ import annotations

import socket
from pathlib import Path

from gateway.demo.local_orthanc import free_port


def test_ports_taken_one_after_another_never_repeat() -> None:
    """The kernel may offer a just-released port again; Orthanc started with the same
    port for HTTP and DICOM fails at start-up ("already in use")."""
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    for port in ports[:20]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))  # and each is free


def test_ports_are_never_in_the_range_outgoing_connections_use() -> None:
    """An outgoing connection (a C-STORE, an HTTP request) takes its local port from
    the kernel's ephemeral range; a port handed out from that range was taken by one
    before Orthanc could bind it (a clean-clone CI run: "DICOM server ... already in
    use", two tests in error)."""
    text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
    low, high = (int(n) for n in text.split())
    ports = [free_port() for _ in range(200)]
    assert not [p for p in ports if low <= p <= high]
