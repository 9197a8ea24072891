"""DICOM over TLS against a TLS-only Orthanc (``DicomTlsEnabled``, client certificates
required): captures go over mutual TLS, storage commitment reports come back over TLS
to the gateway's TLS listener; a CA we do not trust, a certificate that names
another host, and an expired client certificate each fail with their plain reason.

Certificates are made per test with the ``openssl`` command (:mod:`tests.support.dicom_tls`).
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StorageCommitmentPushModel,
    Verification,
)

from gateway.core.config import DicomDestination
from gateway.demo.local_orthanc import OrthancProcess, free_port
from gateway.dicom import network  # noqa: F401  (pynetdicom closes refused sockets)
from gateway.dicom.tls import client_tls
from gateway.service.config import load_config
from gateway.status.checks.tls import check_tls_listener
from gateway.status.web.checks import FAIL, OK, WARN, certificate_checks, check_destination
from tests.support.dicom_tls import Pki, make_pki, tls_orthanc
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.peers import MisbehavingPacs
from tests.support.simulator import SimulatorProcess
from tests.support.state import delivery_rows, ledger_rows, states
from tests.support.waiting import wait_for


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A fresh test CA and its certificates."""
    return make_pki(tmp_path / "pki")


@pytest.fixture
def listen_tls_port() -> int:
    """The port of the gateway's TLS listener (Orthanc reports there)."""
    return free_port()


@pytest.fixture
def secure_orthanc(tmp_path: Path, pki: Pki, listen_tls_port: int) -> Iterator[OrthancProcess]:
    """A TLS-only Orthanc that knows the gateway's TLS listener."""
    server = tls_orthanc(tmp_path / "orthanc", pki, listen_tls_port=listen_tls_port)
    server.start()
    yield server
    server.stop()


def tls_keys(pki: Pki, *, client: str = "gateway", ca: Path | None = None) -> str:
    """The ``[[destinations]]`` TLS keys of a test."""
    return (
        f'tls = true\ntls_ca = "{ca or pki.ca}"\n'
        f'tls_cert = "{pki.cert(client)}"\ntls_key = "{pki.key(client)}"\n'
    )


def listener_keys(pki: Pki, port: int) -> str:
    """The ``[gateway] listen_tls_*`` keys of a test (PACS certificates required)."""
    return (
        f'listen_tls_cert = "{pki.cert("listener")}"\n'
        f'listen_tls_key = "{pki.key("listener")}"\n'
        f'listen_tls_ca = "{pki.ca}"\nlisten_tls_port = {port}\n'
    )


def echo(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``dermgate echo --config CONFIG``."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "echo", "--config", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def plain_echo(port: int) -> bool:
    """True if a plain (no TLS) C-ECHO association to ``port`` is accepted."""
    ae = AE(ae_title="PLAIN")
    ae.add_requested_context(Verification)
    ae.acse_timeout = 5
    ae.network_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title="ORTHANC")
    established = bool(assoc.is_established)
    if established:
        assoc.release()
    return established


def test_captures_go_over_mutual_tls_13_and_commitment_comes_back_over_tls(
    tmp_path: Path,
    pki: Pki,
    listen_tls_port: int,
    secure_orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    assert not plain_echo(secure_orthanc.dicom_port), "the PACS speaks TLS only"
    config = gateway_config(
        tmp_path,
        pacs_port=secure_orthanc.dicom_port,
        listen_port=free_port(),  # plain listener: Orthanc does not know it
        extra_destination=tls_keys(pki),
        extra_gateway=listener_keys(pki, listen_tls_port),
    )
    sim = simulator_factory("--captures", "2", "--interval", "0.1")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0
    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 2, 90, "commitment over TLS")
    for row in ledger_rows(state_dir):
        assert len(secure_orthanc.find_instances(row["sop_instance_uid"])) == 1
    log = gateway.log()
    assert f"commitment listener on 127.0.0.1:{listen_tls_port} (TLS)" in log
    assert "commitment report from pacs: " in log
    # The PACS and the gateway agree on TLS 1.3 with the gateway's client certificate.
    destination = DicomDestination(
        name="pacs",
        kind="dicom",
        ae_title="ORTHANC",
        host="127.0.0.1",
        port=secure_orthanc.dicom_port,
        tls=True,
        tls_ca=pki.ca,
        tls_cert=pki.cert("gateway"),
        tls_key=pki.key("gateway"),
    )
    tls = client_tls(destination)
    assert tls is not None
    with (
        socket.create_connection(("127.0.0.1", secure_orthanc.dicom_port), timeout=5) as raw,
        tls.context.wrap_socket(raw, server_hostname=tls.server_hostname) as wrapped,
    ):
        assert wrapped.version() == "TLSv1.3"
    assert gateway.stop() == 0


def test_a_pacs_signed_by_a_ca_we_do_not_trust_is_refused_with_the_reason(
    tmp_path: Path,
    pki: Pki,
    secure_orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    config = gateway_config(
        tmp_path,
        pacs_port=secure_orthanc.dicom_port,
        extra_destination=tls_keys(pki, ca=pki.stranger_ca) + "breaker_threshold = 2\n",
    )
    sim = simulator_factory("--captures", "1")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0
    state_dir = tmp_path / "state"
    wait_for(
        lambda: "circuit open after 2 failed attempts" in gateway.log(), 60, "the breaker opens"
    )
    (row,) = delivery_rows(state_dir)
    assert row["error_code"] == "tls_untrusted"
    assert "its certificate is not signed by a trusted CA (check tls_ca)" in row["last_error"]
    log = gateway.log()
    # One line per change of state, not one per attempt; nothing reached the PACS.
    assert log.count("destination pacs unavailable: TLS with ORTHANC@") == 1
    assert states(state_dir) == ["WRAPPED"], "waiting to be sent, not sent"
    assert secure_orthanc.count_instances() == 0
    assert gateway.stop() == 0


def write_echo_config(tmp_path: Path, port: int, keys: str) -> Path:
    """A configuration with one TLS destination for ``dermgate echo``."""
    path = tmp_path / "echo.toml"
    path.write_text(
        f'[gateway]\nid = "test-box-01"\nstate_dir = "{tmp_path / "state"}"\n\n'
        f'[[destinations]]\nname = "pacs"\nkind = "dicom"\nae_title = "ORTHANC"\n'
        f'host = "127.0.0.1"\nport = {port}\nconnect_timeout = 3\nacse_timeout = 5\n{keys}',
        encoding="utf-8",
    )
    return path


def test_a_certificate_naming_another_host_is_refused_unless_named_or_unchecked(
    tmp_path: Path, pki: Pki
) -> None:
    orthanc = tls_orthanc(tmp_path / "orthanc", pki, server="pacs-named")
    orthanc.start()
    try:
        # 127.0.0.1 is checked against the certificate's IP addresses: it has none.
        done = echo(write_echo_config(tmp_path, orthanc.dicom_port, tls_keys(pki)))
        assert done.returncode == 1
        assert "its certificate does not name the address we connect to" in done.stdout
        assert "certificate is not valid for '127.0.0.1'" in done.stdout
        named = tls_keys(pki) + 'tls_server_name = "pacs.example"\n'
        done = echo(write_echo_config(tmp_path, orthanc.dicom_port, named))
        assert done.returncode == 0, done.stdout
        assert f"pacs (ORTHANC@127.0.0.1:{orthanc.dicom_port}, TLS): answers C-ECHO" in done.stdout
        unchecked = tls_keys(pki) + "tls_verify_hostname = false\n"
        done = echo(write_echo_config(tmp_path, orthanc.dicom_port, unchecked))
        assert done.returncode == 0, done.stdout
        # Still verified against the CA: a stranger CA fails whatever the name.
        stranger = tls_keys(pki, ca=pki.stranger_ca) + "tls_verify_hostname = false\n"
        done = echo(write_echo_config(tmp_path, orthanc.dicom_port, stranger))
        assert done.returncode == 1
        assert "not signed by a trusted CA" in done.stdout
    finally:
        orthanc.stop()


def test_an_expired_client_certificate_is_named_and_every_expiry_is_shown(
    tmp_path: Path, pki: Pki, secure_orthanc: OrthancProcess
) -> None:
    keys = tls_keys(pki, client="gateway-expired")
    config = write_echo_config(tmp_path, secure_orthanc.dicom_port, keys)
    done = echo(config)
    assert done.returncode == 1
    assert "our client certificate (tls_cert) has expired; install a new one" in done.stdout
    assert "FAIL     PACS pacs: our client certificate" in done.stdout
    # The test CA lives 3 days: under 30 days to go is a warning, with the count.
    assert "WARN     PACS pacs: CA certificate" in done.stdout
    assert "Expires in 2 days." in done.stdout
    report = json.loads(echo(config, "--json").stdout)
    (entry,) = report["destinations"]
    assert entry["tls"] is True
    assert entry["error"]["code"] == "tls_refused"
    assert [(c["what"], c["status"]) for c in report["certificates"]] == [
        ("PACS pacs: CA certificate", "warn"),
        ("PACS pacs: our client certificate", "fail"),
    ]


def report_over_tls(port: int, pki: Pki, client: str | None) -> int | None:
    """Send a commitment report (for a transaction never requested) to the gateway's
    TLS listener as a PACS with ``client``'s certificate (None: plain DICOM, no TLS);
    the status answered, or None if no association could be opened."""
    ae = AE(ae_title="ORTHANC")
    ae.add_requested_context(StorageCommitmentPushModel)
    ae.acse_timeout = 5
    ae.network_timeout = 5
    tls_args = None
    if client is not None:
        context = ssl.create_default_context(cafile=str(pki.ca))
        context.load_cert_chain(str(pki.cert(client)), str(pki.key(client)))
        tls_args = (context, "127.0.0.1")
    role = build_role(StorageCommitmentPushModel, scp_role=True)
    assoc = ae.associate("127.0.0.1", port, ae_title="DERMGATE", ext_neg=[role], tls_args=tls_args)
    if not assoc.is_established:
        return None
    try:
        report = Dataset()
        report.TransactionUID = "2.25.1234567"
        report.ReferencedSOPSequence = []
        status, _ = assoc.send_n_event_report(
            report, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1"
        )
        return int(status.Status) if status and "Status" in status else -1
    finally:
        assoc.release()


def test_the_tls_listener_wants_a_pacs_certificate_signed_by_listen_tls_ca(
    tmp_path: Path,
    pki: Pki,
    listen_tls_port: int,
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    plain_port = free_port()
    config = gateway_config(
        tmp_path,
        pacs_port=free_port(),
        listen_port=plain_port,
        extra_gateway=listener_keys(pki, listen_tls_port),
    )
    gateway = gateway_factory(config)
    wait_for(lambda: "(TLS) as DERMGATE" in gateway.log(), 60, "the TLS listener")
    tls_line = check_tls_listener(load_config(config))
    assert tls_line is not None
    assert tls_line.status == OK, "the why page sees the TLS port"
    # Connections that never start their handshake do not lock the PACS out: they
    # count as waiting to associate, and the newest pushes out the oldest.
    idle = [socket.create_connection(("127.0.0.1", listen_tls_port)) for _ in range(3)]
    try:
        # A certificate from our CA: the association opens; the report itself is
        # judged as any other (a transaction never requested: refused, 0x0110).
        assert report_over_tls(listen_tls_port, pki, "pacs") == 0x0110
    finally:
        for sock in idle:
            sock.close()
    # Another CA's certificate, no certificate at all, or plain DICOM: no association.
    assert report_over_tls(listen_tls_port, pki, "stranger") is None
    assert report_over_tls(listen_tls_port, pki, None) is None
    log = gateway.log()
    assert "connection from 127.0.0.1 closed: the TLS handshake failed (" in log
    # The plain listener is as before.
    assert report_over_tls(plain_port, pki, None) == 0x0110
    assert gateway.stop() == 0


def test_the_why_page_names_the_tls_problem_and_every_certificate_expiry(
    tmp_path: Path, pki: Pki, secure_orthanc: OrthancProcess, listen_tls_port: int
) -> None:
    config_path = gateway_config(
        tmp_path,
        pacs_port=secure_orthanc.dicom_port,
        listen_port=free_port(),
        extra_destination=tls_keys(pki, ca=pki.stranger_ca),
        extra_gateway=listener_keys(pki, listen_tls_port),
    )
    config = load_config(config_path)
    (destination,) = config.dicom_destinations()
    result = check_destination(destination, config.gateway.ae_title)
    assert result.status == FAIL
    assert "its certificate is not signed by a trusted CA (check tls_ca)" in result.finding
    assert "tls_ca" in result.advice
    expiry = {r.name: (r.status, r.finding) for r in certificate_checks(config)}
    assert expiry == {
        "PACS pacs: CA certificate (stranger-ca.pem)": (WARN, "Expires in 2 days."),
        "PACS pacs: our client certificate (gateway.pem)": (WARN, "Expires in 2 days."),
        "DICOM TLS listener certificate (listener.pem)": (WARN, "Expires in 2 days."),
        "DICOM TLS listener: PACS CA certificate (ca.pem)": (WARN, "Expires in 2 days."),
    }
    listener = check_tls_listener(config, timeout=2)
    assert listener is not None
    assert listener.status == FAIL, "the gateway is not running: nothing on the TLS port"
    assert f"port {listen_tls_port}" in listener.name


def test_tls_to_a_plain_dicom_port_says_so_and_never_falls_back_to_plain(
    tmp_path: Path, pki: Pki, pacs: MisbehavingPacs
) -> None:
    pacs.start()
    keys = f'tls = true\ntls_ca = "{pki.ca}"\n'
    done = echo(write_echo_config(tmp_path, pacs.port, keys), "--json")
    assert done.returncode == 1
    (entry,) = json.loads(done.stdout)["destinations"]
    assert entry["error"]["code"] == "tls_refused"
    assert "not its TLS port" in entry["error"]["detail"]
    assert pacs.received == []
