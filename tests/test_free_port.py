"""Ports for the private peers (the demo's and the tests' Orthanc, Mosquitto, pages)."""

from __future__ import annotations

import socket

from gateway.local_orthanc import free_port


def test_ports_taken_one_after_another_never_repeat() -> None:
    """The kernel may offer a just-released port again; Orthanc started with the same
    port for HTTP and DICOM fails at start-up ("already in use")."""
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    for port in ports[:20]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))  # and each is free
