"""The front door of our DICOM listener: bounded before pynetdicom reads a byte.

pynetdicom reads whatever length a PDU header announces (a stranger announcing
4 GiB makes it buffer everything sent), and every TCP connection takes one of its
association slots from the moment it is accepted, so a few connections that never
finish their association request lock the PACS's commitment reports out. No DICOM
association is authenticated: the port must hold against anyone who reaches it.

So ``[gateway] listen_port`` is served by this asyncio front, and pynetdicom
listens behind it on an ephemeral loopback port. The front:

- with ``[gateway] listen_tls_*`` a second front serves ``listen_tls_port``, where
  every connection is TLS: the handshake (our certificate; the PACS's, verified
  against ``listen_tls_ca`` when set) comes after the address check, counts as
  waiting to associate (below) and shares its :data:`HANDSHAKE_SECONDS` with the
  association request; a failed one is logged with OpenSSL's reason (once per
  address, as below);
- admits only loopback, our own listen address, and the addresses the configured
  DICOM destinations may report from (their ``host``, resolved, and their
  ``commitment_from``; re-resolved every minute); anyone else is closed at once;
- gives a new connection :data:`HANDSHAKE_SECONDS` to deliver its whole
  A-ASSOCIATE-RQ (a deadline from the accept, so a byte now and then does not
  extend it), and refuses a first PDU that is not one or that announces more than
  :data:`MAX_REQUEST_PDU` bytes, from its 6-byte header, before reading it;
- keeps at most :data:`WAITING_PER_PEER` connections per address, and
  :data:`WAITING_TOTAL` in all, waiting for their association request; a new one
  pushes out the oldest waiting one, so trickles cannot lock a peer out;
- lets at most :data:`ASSOCIATIONS_PER_PEER` associations per address, and
  :data:`ASSOCIATIONS_TOTAL` in all, be open (beyond: A-ASSOCIATE-RJ, transient,
  local limit exceeded) and each for at most :data:`ASSOCIATION_SECONDS`;
- then relays whole PDUs to pynetdicom, each no longer than the maximum PDU we
  offered (:data:`MAX_PDU`, which the association request's answer announces); an
  association that sends no complete PDU for a minute is ended by pynetdicom.

Each condition is logged once per peer address (at most :data:`_LOGGED_MAX`
of them), never per connection. pynetdicom sees the front's loopback connection
as its peer: :meth:`ListenerFront.peer_of` tells whose connection it relays.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import ssl
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.forward.peer_check import Address, parse_address

log = logging.getLogger(__name__)

HANDSHAKE_SECONDS = 10.0
MAX_REQUEST_PDU = 64 * 1024
MAX_PDU = 16382
WAITING_PER_PEER = 2
WAITING_TOTAL = 16
ASSOCIATIONS_PER_PEER = 4
ASSOCIATIONS_TOTAL = 8
ASSOCIATION_SECONDS = 600.0
ADMITTED_REFRESH_SECONDS = 60.0
_LOGGED_MAX = 256
_CHUNK = 64 * 1024

A_ASSOCIATE_RQ = 0x01
P_DATA_TF = 0x04
# A-ASSOCIATE-RJ: rejected-transient (2), service-provider, presentation related (3),
# local-limit-exceeded (2) (PS3.8 9.3.4).
_REJECT_BUSY = bytes([0x03, 0x00, 0, 0, 0, 4, 0x00, 2, 3, 2])


class Closed(enum.Enum):
    """Why the front closed a connection (the value is the log's wording)."""

    NOT_ADMITTED = "not the address of a configured PACS"
    NOT_A_REQUEST = "its first PDU is not an association request"
    TOO_LONG = "it announced a PDU longer than accepted"
    TOO_SLOW = f"no complete association request within {HANDSHAKE_SECONDS:.0f} s"
    TOO_MANY_WAITING = "too many of its connections waiting to associate"
    BUSY = "too many associations open (answered: local limit exceeded)"
    TOO_LONG_OPEN = f"association open longer than {ASSOCIATION_SECONDS:.0f} s"
    TLS_FAILED = "the TLS handshake failed"


class _Refused(Exception):
    def __init__(self, why: Closed, detail: str = "") -> None:
        super().__init__(why.value)
        self.why = why
        self.detail = detail


@dataclass(eq=False)
class _Connection:
    peer: Address
    writer: asyncio.StreamWriter
    pushed_out: bool = False


@dataclass
class _Counts:
    """Connections per peer address (waiting, or associated)."""

    per_peer: dict[Address, int] = field(default_factory=dict)
    total: int = 0

    def add(self, peer: Address) -> None:
        self.per_peer[peer] = self.per_peer.get(peer, 0) + 1
        self.total += 1

    def remove(self, peer: Address) -> None:
        left = self.per_peer.get(peer, 0) - 1
        if left > 0:
            self.per_peer[peer] = left
        else:
            self.per_peer.pop(peer, None)
        self.total -= 1


def _is_own(peer: Address, listen_address: str) -> bool:
    own = parse_address(listen_address)
    return peer.is_loopback or (own is not None and peer == own)


class ListenerFront:
    """Serves ``address:port`` and relays bounded associations to ``upstream_port``."""

    def __init__(
        self,
        address: str,
        port: int,
        upstream_port: int,
        admitted: Callable[[], frozenset[Address]],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``admitted()`` (blocking: it may resolve host names) lists the remote
        addresses let in besides loopback and ``address`` itself. With ``tls`` every
        connection is TLS (:mod:`gateway.dicom.tls`), handshaken after the address
        check and within :data:`HANDSHAKE_SECONDS`; pynetdicom gets the plain PDUs."""
        self._tls = tls
        self._address = address
        self._port = port
        self._upstream_port = upstream_port
        self._admitted_lookup = admitted
        self._admitted: frozenset[Address] = frozenset()
        self._waiting: OrderedDict[_Connection, None] = OrderedDict()
        self._waiting_counts = _Counts()
        self._associated = _Counts()
        self._peers: dict[int, str] = {}
        self._peers_lock = threading.Lock()
        self._logged: set[tuple[Address, Closed]] = set()
        self._failed = False
        self._server: asyncio.Server | None = None

    def peer_of(self, upstream_port: int) -> str | None:
        """The real peer address of the relayed connection from our ``upstream_port``
        (any thread); None if the front relays no such connection."""
        with self._peers_lock:
            return self._peers.get(upstream_port)

    async def start(self) -> None:
        """Bind ``address:port``; raises OSError if it cannot."""
        self._admitted = await asyncio.to_thread(self._admitted_lookup)
        host = None if self._address in ("", "::") else self._address  # "::": every family
        self._server = await asyncio.start_server(
            self._serve, host, self._port, limit=_CHUNK, reuse_address=True
        )

    async def serve(self) -> None:
        """Serve (after :meth:`start`) until cancelled."""
        assert self._server is not None
        try:
            while True:
                await asyncio.sleep(ADMITTED_REFRESH_SECONDS)
                self._admitted = await asyncio.to_thread(self._admitted_lookup)
        finally:
            self._server.close()

    def _note(self, peer: Address, why: Closed, detail: str = "") -> None:
        key = (peer, why)
        if key in self._logged or len(self._logged) > _LOGGED_MAX:
            log.debug("DICOM listener: connection from %s closed (%s)", peer, why.name)
            return
        self._logged.add(key)
        if len(self._logged) > _LOGGED_MAX:
            log.warning("DICOM listener: many peers closed; no longer logged")
            return
        log.warning(
            "DICOM listener: connection from %s closed: %s%s; further ones like it from "
            "this address are not logged",
            peer,
            why.value,
            detail,
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # drain() then waits until everything is handed to the kernel, so nothing
        # written (a reject, the last PDUs) is dropped when the transport is closed.
        writer.transport.set_write_buffer_limits(0)
        peername = writer.get_extra_info("peername")
        peer = parse_address(str(peername[0])) if peername else None
        try:
            if peer is None:
                return
            if not (_is_own(peer, self._address) or peer in self._admitted):
                self._note(peer, Closed.NOT_ADMITTED)
                return
            request = await self._first_request(peer, reader, writer)
            if request is None:
                return
            if (
                self._associated.total >= ASSOCIATIONS_TOTAL
                or self._associated.per_peer.get(peer, 0) >= ASSOCIATIONS_PER_PEER
            ):
                self._note(peer, Closed.BUSY)
                writer.write(_REJECT_BUSY)
                with contextlib.suppress(OSError, TimeoutError):
                    async with asyncio.timeout(5):  # not wait_for (3.11 can swallow a stop)
                        await writer.drain()
                return
            self._associated.add(peer)
            try:
                async with asyncio.timeout(ASSOCIATION_SECONDS):
                    await self._relay(peer, request, reader, writer)
            except TimeoutError:
                self._note(peer, Closed.TOO_LONG_OPEN)
            except _Refused as refused:
                self._note(peer, refused.why, refused.detail)
            finally:
                self._associated.remove(peer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        except Exception:  # a bug here must not log a traceback per connection
            if not self._failed:
                self._failed = True
                log.exception("DICOM listener: a connection failed unexpectedly")
        finally:
            writer.transport.abort()

    async def _handshake(self, writer: asyncio.StreamWriter) -> None:
        """TLS on this connection (server side); _Refused if the handshake fails."""
        assert self._tls is not None
        try:
            await writer.start_tls(self._tls)
        except ssl.SSLError as err:
            words = getattr(err, "verify_message", None) or err.reason or type(err).__name__
            raise _Refused(Closed.TLS_FAILED, f" ({str(words).lower()})") from err
        writer.transport.set_write_buffer_limits(0)  # the TLS transport replaced the TCP one

    async def _first_request(
        self, peer: Address, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes | None:
        """The whole A-ASSOCIATE-RQ PDU, or None (closed, refused, pushed out)."""
        conn = _Connection(peer, writer)
        self._make_room(peer)
        self._waiting[conn] = None
        self._waiting_counts.add(peer)
        try:
            async with asyncio.timeout(HANDSHAKE_SECONDS):
                if self._tls is not None:
                    await self._handshake(writer)
                return await self._read_request(reader)
        except TimeoutError:
            if not conn.pushed_out:
                self._note(peer, Closed.TOO_SLOW)
        except _Refused as refused:
            self._note(peer, refused.why, refused.detail)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if conn in self._waiting:
                del self._waiting[conn]
                self._waiting_counts.remove(peer)
        return None

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> bytes:
        """The first PDU, if it is an A-ASSOCIATE-RQ of a sane length (else _Refused)."""
        header = await reader.readexactly(6)
        kind, _, length = struct.unpack(">BBL", header)
        if kind != A_ASSOCIATE_RQ:
            raise _Refused(Closed.NOT_A_REQUEST)
        if length > MAX_REQUEST_PDU:
            raise _Refused(Closed.TOO_LONG, f" ({length} bytes, at most {MAX_REQUEST_PDU})")
        return header + await reader.readexactly(length)

    def _make_room(self, peer: Address) -> None:
        """Push out the oldest waiting connection of ``peer`` (or of anyone) if full."""
        if self._waiting_counts.per_peer.get(peer, 0) >= WAITING_PER_PEER:
            oldest = next(c for c in self._waiting if c.peer == peer)
        elif self._waiting_counts.total >= WAITING_TOTAL:
            oldest = next(iter(self._waiting))
        else:
            return
        del self._waiting[oldest]
        self._waiting_counts.remove(oldest.peer)
        oldest.pushed_out = True
        self._note(oldest.peer, Closed.TOO_MANY_WAITING)
        oldest.writer.transport.abort()

    async def _relay(
        self,
        peer: Address,
        request: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        up_reader, up_writer = await asyncio.open_connection(
            "127.0.0.1", self._upstream_port, limit=_CHUNK
        )
        local_port = int(up_writer.get_extra_info("sockname")[1])
        with self._peers_lock:
            self._peers[local_port] = str(peer)
        try:
            up_writer.write(request)
            inbound = asyncio.create_task(self._pdus(reader, up_writer))
            outbound = asyncio.create_task(self._copy(up_reader, writer))
            try:
                done, _ = await asyncio.wait(
                    (inbound, outbound), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for task in (inbound, outbound):
                    task.cancel()
                await asyncio.gather(inbound, outbound, return_exceptions=True)
            for task in done:
                error = task.exception()
                if isinstance(error, _Refused):
                    raise error
        finally:
            with self._peers_lock:
                self._peers.pop(local_port, None)
            up_writer.transport.abort()

    @staticmethod
    async def _pdus(reader: asyncio.StreamReader, up: asyncio.StreamWriter) -> None:
        """Peer to pynetdicom: whole PDUs, each checked from its header first."""
        while True:
            try:
                header = await reader.readexactly(6)
            except asyncio.IncompleteReadError:
                return
            kind, _, length = struct.unpack(">BBL", header)
            bound = MAX_PDU if kind == P_DATA_TF else MAX_REQUEST_PDU
            if length > bound:
                raise _Refused(Closed.TOO_LONG, f" ({length} bytes, at most {bound})")
            up.write(header + await reader.readexactly(length))
            await up.drain()

    @staticmethod
    async def _copy(up: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """pynetdicom to the peer, as it comes."""
        while data := await up.read(_CHUNK):
            writer.write(data)
            await writer.drain()
