"""Our DICOM listener stays bounded against a stranger's giant PDUs and trickles.

The storage commitment listener (``[gateway] listen_port``) is open to the clinic
network before any authentication: a DICOM association has none. Here a raw
socket plays the stranger: it announces a 4 GiB PDU and streams as fast as it can,
or opens a dozen connections that send one byte every few seconds. The gateway runs
as ``dermgate run`` under the file-descriptor limit systemd gives a service, with a
real pynetdicom PACS that reports its commitments; the PACS's reports must still
get through, the gateway's memory must stay small, and each condition is logged
once per peer address. The "why" page's listener check must tell a listener that
accepts TCP but answers no association from one that works.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from gateway.service.config import load_config
from gateway.status.web.checks import FAIL, OK, check_listener
from tests.conftest import GatewayProcess, SimulatorProcess, gateway_config, states, wait_for
from tests.peers import HeldAssociations, MisbehavingPacs

MIB = 1024 * 1024


@pytest.fixture
def limited_gateway(tmp_path: Path) -> Iterator[Callable[[Path], GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(config: Path) -> GatewayProcess:
        gw = GatewayProcess(config, tmp_path / "gateway.log")
        gw.start()
        started.append(gw)
        gw.wait_running()
        wait_for(lambda: "commitment listener on" in gw.log(), 60, "the listener")
        return gw

    yield start
    for gw in started:
        if gw.proc is not None and gw.proc.poll() is None:
            gw.proc.kill()
            gw.proc.wait()
        gw.close_logs()


def _config(tmp_path: Path, pacs: MisbehavingPacs, **keys: float) -> Path:
    pacs.start()
    return gateway_config(
        tmp_path,
        pacs_port=pacs.port,
        pacs_ae="MISBEHAVE",
        listen_port=pacs.report_to,
        commitment_timeout=keys.get("commitment_timeout", 300.0),
    )


def _stream(port: int, header: bytes, total: int, sock: socket.socket | None = None) -> int:
    """Send ``header`` then up to ``total`` bytes as fast as possible; return what was sent
    before the listener closed the connection."""
    conn = sock or socket.create_connection(("127.0.0.1", port), timeout=30)
    sent = 0
    chunk = b"\0" * MIB
    try:
        conn.sendall(header)
        while sent < total:
            conn.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    except OSError as err:
        # EBADF: the socket belongs to a pynetdicom association whose own reader thread
        # closed it when the listener ended the connection under us.
        if err.errno not in (errno.EPIPE, errno.ECONNRESET, errno.EBADF):
            raise
    finally:
        conn.close()
    return sent


def _log_lines(log: str, needle: str, peer: str) -> int:
    return sum(1 for line in log.splitlines() if needle in line and peer in line)


def test_a_giant_pdu_is_refused_before_it_is_read(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    limited_gateway: Callable[[Path], GatewayProcess],
) -> None:
    gateway = limited_gateway(_config(tmp_path, pacs))
    assert pacs.report_to is not None
    before = gateway.vm_hwm()

    # An association request announcing 4 GiB, twice: 200 MB, then 20 MB.
    header = b"\x01\x00\xff\xff\xff\xff"
    first = _stream(pacs.report_to, header, 200 * MIB)
    second = _stream(pacs.report_to, header, 20 * MIB)
    assert first < 100 * MIB, "the connection is closed long before the stream ends"
    assert second < 20 * MIB

    # A real association, then a P-DATA announcing 4 GiB (more than the PDU we offered).
    ae = AE(ae_title="STRANGER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", pacs.report_to, ae_title="DERMGATE")
    assert assoc.is_established
    raw = assoc.dul.socket.socket
    sent = _stream(pacs.report_to, b"\x04\x00\xff\xff\xff\xff", 100 * MIB, sock=raw)
    assoc.abort()
    assert sent < 100 * MIB

    grown = gateway.vm_hwm() - before
    assert grown < 50 * MIB, f"the gateway's peak memory grew by {grown // MIB} MiB"
    log = gateway.log()
    assert _log_lines(log, "longer than", "127.0.0.1") == 1, "once per peer, not per connection"
    wait_for(lambda: check_listener(load_config(gateway.config)).status == OK, 30, "still works")
    assert gateway.stop() == 0


class Trickle:
    """A connection that sends one byte of a PDU every ``every`` seconds."""

    def __init__(self, port: int, source: str, every: float = 2.0) -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=10, source_address=(source, 0)
        )
        self.source = source
        self.closed = threading.Event()
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        data = b"\x01\x00\x00\x00\x00\xc8" + b"\0" * 200
        for byte in data:
            readable, _, _ = select.select([self.sock], [], [], self._every)
            if self._stop.is_set():
                return
            try:
                if readable and not self.sock.recv(1024):
                    break
                if not readable:
                    self.sock.send(bytes([byte]))
            except OSError:
                break
        self.closed.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.sock.close()


def test_trickling_connections_do_not_block_commitment_reports(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    limited_gateway: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    pacs.commit_script = ["hold"]
    config = _config(tmp_path, pacs)
    simulator_factory("--captures", "1")
    gateway = limited_gateway(config)
    state_dir = tmp_path / "state"
    wait_for(lambda: pacs.held and states(state_dir) == ["SENT"], 90, "a report held back")
    assert pacs.report_to is not None

    # A dozen trickles from six other addresses, and two from the PACS's own.
    sources = [f"127.0.0.{n}" for n in range(2, 8) for _ in range(2)] + ["127.0.0.1"] * 2
    trickles = [Trickle(pacs.report_to, source) for source in sources]
    try:
        time.sleep(1)  # let each send its first bytes
        pacs.release_held()
        wait_for(lambda: states(state_dir) == ["COMMITTED"], 60, "the PACS's report applied")
        wait_for(lambda: pacs.report_statuses, 30, "the report answered")
        assert pacs.report_statuses == [0x0000]
        wait_for(lambda: all(t.closed.is_set() for t in trickles), 60, "the trickles closed")
    finally:
        for trickle in trickles:
            trickle.stop()
    log = gateway.log()
    for n in range(2, 8):
        assert _log_lines(log, "no complete association request", f"127.0.0.{n} ") == 1
    assert gateway.stop() == 0


def test_why_page_listener_check_needs_a_real_association(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    limited_gateway: Callable[[Path], GatewayProcess],
) -> None:
    # Something accepts TCP on the port but never answers an association.
    (tmp_path / "mute").mkdir()
    mute = socket.create_server(("127.0.0.1", 0))
    mute_config = gateway_config(
        tmp_path / "mute", pacs_port=pacs.port, listen_port=mute.getsockname()[1]
    )
    try:
        result = check_listener(load_config(mute_config), timeout=2)
    finally:
        mute.close()
    assert result.status == FAIL, result

    # The real listener answers; with every slot taken it does not, and then again.
    gateway = limited_gateway(_config(tmp_path, pacs))
    config = load_config(gateway.config)
    assert check_listener(config).status == OK
    assert pacs.report_to is not None
    held = HeldAssociations(pacs.report_to)
    try:
        assert held.fill() >= 1
        result = check_listener(config)
        assert result.status == FAIL, result
        assert "association" in result.finding
    finally:
        held.release()
    wait_for(lambda: check_listener(config).status == OK, 60, "the listener free again")
    assert gateway.stop() == 0


@pytest.fixture
def other_address() -> Iterator[str]:
    """An address of this box that is neither loopback nor any destination's: one from
    TEST-NET-1 added to ``lo`` for the test (root, as the README runs the tests)."""
    assert os.geteuid() == 0, "run the tests as root (scripts/test.sh, as CI does)"
    address = "192.0.2.77"
    subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"], check=True)
    try:
        yield address
    finally:
        subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", "lo"], check=False)


def _echo_from(port: int, source: str) -> bool:
    """An association and C-ECHO from ``source``; True if answered."""
    ae = AE(ae_title="STRANGER")
    ae.add_requested_context(Verification)
    ae.acse_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="DERMGATE", bind_address=(source, 0))
    assert assoc.is_established, f"an association from {source}"
    try:
        return bool(assoc.send_c_echo())
    finally:
        assoc.release()


def _closed_at_once(port: int, source: str) -> bool:
    """True if a connection from ``source`` is closed before it could send a PDU
    (well within the time allowed for an association request)."""
    with socket.create_connection(("127.0.0.1", port), 10, (source, 0)) as conn:
        conn.settimeout(5)  # the listener gives an admitted peer 10 s
        try:
            conn.sendall(b"\x01\x00")
            return conn.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def test_only_the_destinations_addresses_are_let_in(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    limited_gateway: Callable[[Path], GatewayProcess],
    other_address: str,
) -> None:
    other = other_address
    gateway = limited_gateway(_config(tmp_path, pacs))
    assert pacs.report_to is not None
    assert _echo_from(pacs.report_to, "127.0.0.1"), "loopback is let in"
    assert _closed_at_once(pacs.report_to, other), "an address no destination has is not"
    assert _closed_at_once(pacs.report_to, other)
    assert _log_lines(gateway.log(), "not the address of a configured PACS", other) == 1
    assert gateway.stop() == 0

    # Listed in commitment_from: let in.
    with gateway.config.open("a", encoding="utf-8") as fh:
        fh.write(
            f'\n[[destinations]]\nname = "other"\nkind = "dicom"\nae_title = "OTHER"\n'
            f'host = "127.0.0.1"\nport = {pacs.port}\nstorage_commitment = true\n'
            f'commitment_from = ["{other}"]\n'
        )
    gateway = limited_gateway(gateway.config)
    assert _echo_from(pacs.report_to, other)
    assert gateway.stop() == 0
