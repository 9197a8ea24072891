"""DICOM peers: C-ECHO to each PACS and to the worklist SCP, and our commitment listener.

A failed echo says which of three things happened, because each has its own fix:
nothing listens (the connection is refused), something takes the connection but never
answers the association request (no answer within the timeout), or the peer rejects
the association, and then the A-ASSOCIATE-RJ reason (PS3.8 Table 9-21, source
"service user") names the wrong AE title: ``3`` calling AE title not recognised (the
peer does not know *our* AE title), ``7`` called AE title not recognised (the peer's
AE title in our configuration is wrong). Blocking (pynetdicom).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

from gateway.core.config import DermGateConfig, DicomDestination
from gateway.dicom.network import dermgate_ae
from gateway.forward.association import associate, tls_error
from gateway.forward.contexts import VERIFICATION
from gateway.status.checks.result import FAIL, OK, WARN, CheckResult
from gateway.status.checks.tls import tls_refused

__all__ = [
    "CALLED_AE_NOT_RECOGNISED",
    "CALLING_AE_NOT_RECOGNISED",
    "Peer",
    "check_destination",
    "check_listener",
    "check_worklist",
    "tcp_problem",
]

#: A-ASSOCIATE-RJ diagnostics of the service user (result source 1), PS3.8 Table 9-21.
CALLING_AE_NOT_RECOGNISED = 0x03
CALLED_AE_NOT_RECOGNISED = 0x07


def tcp_problem(host: str, port: int, timeout: float) -> str | None:
    """None if a TCP connection opens, else ``"refused"``, ``"timeout"`` or the reason."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"
    except OSError as err:
        return err.strerror or type(err).__name__


@dataclass(frozen=True, slots=True)
class Peer:
    """A DICOM peer as a check names it: ``what`` ("PACS", "worklist SCP") and the
    configuration key of its AE title (the advice names it)."""

    what: str
    host: str
    port: int
    ae_title: str
    ae_key: str


def _connect_failure(name: str, peer: Peer, problem: str) -> CheckResult:
    if problem == "refused":
        return CheckResult(
            name,
            FAIL,
            "Connection refused: the computer answers but nothing listens on that port.",
            f"Check that the {peer.what} service is running and that the port in the "
            f"configuration is the {peer.what}'s DICOM port.",
        )
    if problem == "timeout":
        return CheckResult(
            name,
            FAIL,
            "No answer from the network.",
            "Check the network cable and that a firewall lets this box reach "
            f"{peer.host} on port {peer.port}.",
        )
    return CheckResult(
        name,
        FAIL,
        f"Cannot connect: {problem}.",
        "Check the host name or address in the configuration, and the network.",
    )


def _rejected(name: str, peer: Peer, our_ae: str, assoc: Any) -> CheckResult:
    """The line of a rejected association, from its A-ASSOCIATE-RJ reason."""
    answer = getattr(assoc.acceptor, "primitive", None)
    source = getattr(answer, "result_source", None)
    reason = getattr(answer, "diagnostic", None)
    if source == 1 and reason == CALLED_AE_NOT_RECOGNISED:
        return CheckResult(
            name,
            FAIL,
            f"Rejected: the {peer.what} does not answer to the AE title {peer.ae_title} "
            "(called AE title not recognised).",
            f"The {peer.what}'s AE title in this box's configuration ({peer.ae_key}) is "
            f"wrong: ask the {peer.what}'s administrator for its AE title and set it there.",
        )
    if source == 1 and reason == CALLING_AE_NOT_RECOGNISED:
        return CheckResult(
            name,
            FAIL,
            f"Rejected: the {peer.what} does not know this box's AE title {our_ae} "
            "(calling AE title not recognised).",
            f"Ask the {peer.what}'s administrator to add the AE title {our_ae} (and this "
            f"box's address) to its known modalities, or set [gateway] ae_title to the "
            "title it knows this box by.",
        )
    if source == 3:
        return CheckResult(
            name,
            FAIL,
            f"Rejected: the {peer.what} is busy (too many connections).",
            "Try again later; if it stays, ask its administrator about its connection limit.",
        )
    return CheckResult(
        name,
        FAIL,
        f"Rejected by the {peer.what} (reason {reason}, source {source}).",
        f"Ask the {peer.what}'s administrator to check its entry for this box: AE title "
        f"{our_ae}, and that its own AE title is {peer.ae_title}.",
    )


def _echo(
    name: str, peer: Peer, our_ae: str, timeout: float, tls: DicomDestination | None
) -> CheckResult:
    """:func:`_echo_once`, tried again once after a short pause when the peer closed
    the connection at once: a busy single-process SCP (DCMTK's ``wlmscpfs``) may drop
    an association that arrives while it finishes the previous one."""
    result, dropped = _echo_once(name, peer, our_ae, timeout, tls)
    if dropped:
        time.sleep(0.5)
        result, _ = _echo_once(name, peer, our_ae, timeout, tls)
    return result


def _echo_once(
    name: str, peer: Peer, our_ae: str, timeout: float, tls: DicomDestination | None
) -> tuple[CheckResult, bool]:
    """Associate as ``our_ae`` (over TLS with ``tls``) and C-ECHO: its line, and
    whether the peer dropped the association at once (worth one more try).

    Only when no association came about is a bare TCP connection tried, to tell a
    refused connection or a silent network from a peer that took the connection: a
    single-process SCP (DCMTK's) may abort the next association after an empty one.
    """
    ae = dermgate_ae(our_ae)
    ae.add_requested_context(VERIFICATION)
    ae.connection_timeout = timeout
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    started = time.monotonic()
    if tls is not None:
        assoc = associate(ae, tls)  # over TLS when the destination says so
    else:
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
    try:
        if assoc.is_rejected:
            return _rejected(name, peer, our_ae, assoc), False
        if not assoc.is_established:
            waited = time.monotonic() - started
            problem = tcp_problem(peer.host, peer.port, timeout)
            if problem is not None:
                return _connect_failure(name, peer, problem), False
            error = tls_error(assoc, tls) if tls is not None else None
            if error is not None:
                return tls_refused(name, error), False
            if waited >= timeout * 0.9:
                return CheckResult(
                    name,
                    FAIL,
                    f"No answer: the connection opens but the association request is not "
                    f"answered within {timeout:g} s.",
                    f"Something else may listen on port {peer.port}, or the {peer.what} is "
                    "hung; check the port and restart the service there.",
                ), False
            return CheckResult(
                name,
                FAIL,
                f"The {peer.what} closed the connection without answering.",
                f"Check the AE titles with the {peer.what}'s administrator (ours: {our_ae}, "
                f"its: {peer.ae_title}).",
            ), True
        status = assoc.send_c_echo()
        code = getattr(status, "Status", None) if status else None
        if code == 0:
            return CheckResult(name, OK, "Answers a DICOM echo."), False
        return CheckResult(
            name,
            FAIL,
            "Connected, but the echo was not answered.",
            f"The {peer.what} may be overloaded or misconfigured; ask its administrator.",
        ), False
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def check_destination(dest: DicomDestination, our_ae: str, timeout: float = 5.0) -> CheckResult:
    """A C-ECHO association as our AE title (over TLS if configured); its verdict."""
    name = f"PACS {dest.name} ({dest.ae_title} at {dest.host}:{dest.port})"
    peer = Peer("PACS", dest.host, dest.port, dest.ae_title, f'"{dest.name}" ae_title')
    return _echo(name, peer, our_ae, timeout, dest)


def check_worklist(config: DermGateConfig) -> CheckResult | None:
    """C-ECHO to the ``[worklist]`` SCP as our AE title (None without ``[worklist]``)."""
    w = config.worklist
    if w is None:
        return None
    name = f"Worklist SCP ({w.ae_title} at {w.host}:{w.port})"
    peer = Peer("worklist SCP", w.host, w.port, w.ae_title, "[worklist] ae_title")
    result = _echo(name, peer, config.gateway.ae_title, min(w.timeout, 10.0), None)
    if result.status == FAIL:  # captures still go out: the technician picks by hand
        return CheckResult(
            result.name,
            FAIL,
            f"{result.finding} Orders are not refreshed (the cached list is used).",
            result.advice,
        )
    return result


def _listener_echo(host: str, port: int, ae_title: str, timeout: float) -> str | None:
    """None if ``ae_title`` at ``host:port`` accepts an association and answers a C-ECHO
    (asked as ``ae_title`` itself), else a plain reason."""
    ae = dermgate_ae(ae_title)
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    assoc = ae.associate(host, port, ae_title=ae_title)
    try:
        if assoc.is_rejected:
            return "it rejected the association: all its connections may be taken"
        if not assoc.is_established:
            return "it accepts connections but does not answer a DICOM association request"
        status = assoc.send_c_echo()
        code = getattr(status, "Status", None) if status else None
        if code == 0:
            return None
        return "it accepted an association but did not answer the echo"
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def check_listener(
    config: DermGateConfig, timeout: float = 5.0, *, overdue: bool = False
) -> CheckResult:
    """Our storage commitment listener answers an association from this box.

    ``overdue``: a PACS's confirmations are not arriving although we listen.
    """
    g = config.gateway
    host = "127.0.0.1" if g.listen_address in ("0.0.0.0", "", "::") else g.listen_address
    name = f"Commitment listener (port {g.listen_port})"
    if not any(d.storage_commitment for d in config.dicom_destinations()):
        return CheckResult(name, OK, "Not needed: no destination uses storage commitment.")
    problem = tcp_problem(host, g.listen_port, timeout)
    if problem is not None:
        return CheckResult(
            name,
            FAIL,
            f"Not reachable ({problem}).",
            "Check that the DermGate service runs (systemctl status dermgate) and restart "
            f"it; if it stays, another program may use port {g.listen_port}.",
        )
    problem = _listener_echo(host, g.listen_port, g.ae_title, timeout)
    if problem is not None:
        return CheckResult(
            name,
            FAIL,
            f"Reachable, but {problem}, so a PACS's confirmations cannot arrive either.",
            "The log names the addresses whose connections were closed (too many, too "
            "slow, too long). If it stays, restart the DermGate service; if another "
            f"program uses port {g.listen_port}, stop it.",
        )
    if overdue:
        return CheckResult(
            name,
            WARN,
            "Listening here, but a PACS's confirmations do not arrive (see below).",
            "The listener works; the PACS sends its reports elsewhere or is blocked.",
        )
    return CheckResult(name, OK, "Answers an association and a DICOM echo.")
