"""Write a C-STORE's P-DATA ourselves: large socket writes, flat memory, no hang.

Why pynetdicom alone is slow and grows with the object. With
``_config.STORE_SEND_CHUNKED_DATASET``, ``Association.send_c_store(path)`` leaves the
data set in the file (``C_STORE._dataset_path``) and calls
``DIMSEServiceProvider.send_msg``, which iterates ``DIMSEMessage.encode_msg``: a
generator that ``f.read()``\\s ``max_pdu_length - 6`` bytes per step and yields one
``P_DATA`` primitive per fragment. ``send_msg`` hands each to
``DULServiceProvider.send_pdu``, which puts it on ``to_provider_queue``, an unbounded
``queue.Queue``. The socket is written by another thread, the DUL reactor
(``run_reactor``), one primitive per turn of its loop (``_process_recv_primitive`` →
Evt9 → ``fsm.DT_1`` → ``P_DATA_TF(...).encode()`` → ``AssociationSocket.send``).
A PACS offering a 16 KiB maximum PDU (Orthanc, most PACS) means ~450 such turns per
7 MB object, ~120 µs each, and two threads handing the GIL to each other for every
one: the sender's ceiling, well below the wire's (``bench/README.md``, item 1).
Nothing makes the reading thread wait either, so the queue holds every fragment read
but not yet sent (465-550 MB peak RSS for a 1 GB object); and since pynetdicom clears
the socket timeout after connecting, a PACS that stops reading blocks the DUL in
``socket.send`` for ever.

What :func:`stream_c_store` does instead, for C-STORE requests only (everything
else, the association's set-up and release, C-ECHO, the responses, stays
pynetdicom's; :mod:`gateway.forward.direct_store` reads a plain C-STORE-RSP's status
itself): it replaces ``send_msg`` on one association, encodes the P-DATA-TF
PDUs itself — PDU type 0x04, one PDV item each, byte for byte what
``P_DATA_TF(primitive).encode()`` gives — and writes them from the calling thread
straight to the association's socket, :data:`BURST` bytes of data (a few dozen PDUs)
per ``sendall``. The file is read in the same bursts, so memory holds one burst,
whatever the object's size. The command set comes from pynetdicom's own steps
(``C_STORE_RQ.primitive_to_message``, ``EVT_DIMSE_SENT``, ``encode_msg``) when a
handler listens for ``EVT_DIMSE_SENT``; otherwise :func:`c_store_command` encodes it
directly (the same bytes, without building pydicom data sets per instance). While
the ``pynetdicom`` logger drops INFO and DEBUG (the gateway keeps it at CRITICAL,
WARNING when debugging), pynetdicom's standard DIMSE/PDU handlers, which only format
log lines, are unbound from the association.

The invariants that make writing beside the DUL safe:

* **One writer at a time.** :func:`stream_c_store` wraps the DUL's two socket entry
  points on this association — ``_send`` (every PDU the state machine writes:
  P-DATA of other messages, A-RELEASE, A-ABORT) and ``_is_transport_event`` (the
  reactor's ``select``/``recv``) — in one lock, which the sending thread holds for
  each burst. So the DUL never writes between two of our PDUs, never reads while we
  write (an ``ssl.SSLSocket`` must not be used by two threads at once), and an
  A-ABORT queued by another thread goes out after the burst in flight, whole.
* **Only in data transfer, only when the DUL is quiescent.** Before the first PDU
  of a message the DUL's queue must be empty (nothing of an earlier message still
  waiting to go out, so no interleaving: PS3.8 9.3.1), and before every burst the
  reactor must be alive and the state machine in Sta6. Otherwise the message is
  given up.
* **Never more than the peer's maximum.** Each PDV item is at most the peer's
  maximum PDU length (``assoc.dimse.maximum_pdu_size``; 0 means unlimited) and at
  most :data:`MAX_FRAGMENT`, the same limit pynetdicom's own fragments keep.
* **Whole PDUs, last fragment last.** A burst holds whole PDUs. A message given up
  (the DUL stopped, the file ended early, the peer stopped reading) never gets its
  last fragment (control header 0x02), so the peer cannot mistake it for a whole
  object. A failed or timed-out socket write is what pynetdicom does on one:
  ``Evt17`` (transport closed) on the DUL's event queue, so the association ends as
  aborted by the network and the sender reports the instance as retryable.
* **No hang.** The socket gets ``stall_timeout`` (the destination's
  ``network_timeout``) as its timeout, so a write to a peer that stopped reading
  fails after it; waiting for the lock or for the DUL's queue gives up after it too.
* **Paced.** With ``max_mbps`` each burst takes its bytes from the destination's
  token bucket first, and is at most the bucket's :meth:`fragment_size
  <gateway.forward.bucket.TokenBucket.fragment_size>`, so a slow link sees small
  writes often.
* **An idle reactor waits, it does not spin.** When the DUL is in Sta6 with nothing
  queued and no event pending, its look at the socket first waits in ``select()``
  (outside the lock; for TLS only when OpenSSL holds no buffered bytes) for up to
  :data:`_WAIT`, so a response wakes it at once and a silent peer costs ~50 turns a
  second instead of pynetdicom's ~1,000 (4 % of a core per association). Anything
  queued for it (A-RELEASE, A-ABORT, another message) waits at most that long.
* **Release, not abort.** When the last PDU is written the DUL's queue is empty and
  its state machine still in Sta6, so the response, the next C-STORE and the
  A-RELEASE go through pynetdicom as before.

Not signalled for our PDUs: ``EVT_PDU_SENT`` and ``EVT_DATA_SENT`` (only pynetdicom's
debug handlers use them; the gateway binds neither). Not chosen: a bounded
``to_provider_queue`` (its blocking ``put`` never returns once the DUL is gone),
several PDVs in one P-DATA-TF PDU (the peer's maximum bounds the whole PDU, so it
saves nothing at 16 KiB), and a patch to the installed pynetdicom (lost at the next
``pip install``).

This relies on pynetdicom 3.0.x's ``DIMSEServiceProvider.send_msg``,
``DIMSEMessage.encode_msg``, ``C_STORE._dataset_path``, the standard handlers in
``pynetdicom._handlers``, and the DUL's
``to_provider_queue``, ``event_queue``, ``state_machine``, ``_send`` and
``_is_transport_event``; ``tests/e2e/test_cstore_pdus.py`` checks the PDUs
against pynetdicom's and ``tests/e2e/test_cstore_memory.py`` the whole against a
real PACS.
"""

from __future__ import annotations

import contextlib
import io
import logging
import select
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Final

from pynetdicom import _handlers, evt
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE

from gateway.forward.bucket import TokenBucket

__all__ = [
    "BURST",
    "MAX_FRAGMENT",
    "c_store_command",
    "direct_sender",
    "encode_pdu",
    "stream_c_store",
]

MAX_FRAGMENT: Final = 256 * 1024
"""Largest PDV item we send, whatever larger size the peer accepts (bytes)."""

BURST: Final = 1024 * 1024
"""Data bytes written per socket write (whole PDUs; fewer with ``max_mbps``)."""

_POLL: Final = 0.002
"""Seconds between looks at a DUL that still has something of its own to send."""

_WAIT: Final = 0.02
"""Longest wait of an idle DUL reactor for incoming data before it looks at its
queues again (pynetdicom polls every 1 ms: ~4 % of a core per association)."""

_DATA_TRANSFER: Final = "Sta6"
_HEADER = struct.Struct(">BBIIBB")  # PDU type, reserved, PDU length, item length, id, control
_LAST_COMMAND: Final = 0x03
_DATA: Final = 0x00
_LAST_DATA: Final = 0x02


def encode_pdu(context_id: int, control: int, data: bytes | memoryview) -> bytes:
    """One P-DATA-TF PDU holding one PDV item: ``data`` with its message control header."""
    n = len(data)
    return _HEADER.pack(0x04, 0x00, n + 6, n + 2, context_id, control) + bytes(data)


def stream_c_store(assoc: Any, *, stall_timeout: float, bucket: TokenBucket | None = None) -> None:
    """Make every C-STORE request on ``assoc`` go out in large writes of its own PDUs.

    Call once, right after the association is established. ``stall_timeout`` (the
    destination's network timeout) becomes the socket's timeout and bounds every
    wait. ``bucket`` (the destination's ``max_mbps``, shared by its associations)
    paces the writes.
    """
    sock = assoc.dul.socket
    if sock is not None and sock.socket is not None:
        sock.socket.settimeout(stall_timeout)
    turn = _one_writer(assoc.dul)
    _drop_silent_log_handlers(assoc)
    assoc.dimse.send_msg = _DirectSender(assoc, stall_timeout, assoc.dimse.send_msg, bucket, turn)


def direct_sender(assoc: Any) -> _DirectSender | None:
    """The writer :func:`stream_c_store` put on ``assoc`` (None: pynetdicom's own)."""
    sender = assoc.dimse.send_msg
    return sender if isinstance(sender, _DirectSender) else None


_LOG_HANDLERS: Final = (
    (evt.EVT_DIMSE_SENT, _handlers.standard_dimse_sent_handler),
    (evt.EVT_DIMSE_RECV, _handlers.standard_dimse_recv_handler),
    (evt.EVT_PDU_SENT, _handlers.standard_pdu_sent_handler),
    (evt.EVT_PDU_RECV, _handlers.standard_pdu_recv_handler),
)


def _drop_silent_log_handlers(assoc: Any) -> None:
    """Unbind pynetdicom's standard DIMSE/PDU log handlers from ``assoc`` while the
    ``pynetdicom`` logger drops their lines anyway (below INFO: the gateway keeps it
    at CRITICAL, WARNING when debugging). They only format log lines, for every
    message and PDU, on the sending and the reactor thread."""
    if logging.getLogger("pynetdicom").isEnabledFor(logging.INFO):
        return
    for event, handler in _LOG_HANDLERS:
        if any(bound is handler for bound, _ in assoc.get_handlers(event)):
            assoc.unbind(event, handler)


def _one_writer(dul: Any) -> threading.Lock:
    """Wrap the DUL's socket entry points in a lock; return it (see the invariants).

    The reactor's look at the socket also waits up to :data:`_WAIT` for data when it
    has nothing else to do, instead of pynetdicom's 1 ms sleep-and-poll.
    """
    lock = threading.Lock()
    send: Callable[[Any], None] = dul._send
    poll: Callable[[], bool] = dul._is_transport_event

    def locked_send(pdu: Any) -> None:
        with lock:
            send(pdu)

    def waiting_poll() -> bool:
        _wait_for_data(dul, lock)
        with lock:
            return poll()

    dul._send = locked_send
    dul._is_transport_event = waiting_poll
    return lock


def _wait_for_data(dul: Any, lock: threading.Lock) -> None:
    """Block until the socket is readable, for at most :data:`_WAIT`, when the DUL is
    idle in data transfer: nothing queued to send, no event to handle."""
    sock = dul.socket.socket if dul.socket is not None else None
    if (
        sock is None
        or dul.state_machine.current_state != _DATA_TRANSFER
        or dul.to_provider_queue.queue
        or dul.event_queue.queue
    ):
        return
    if isinstance(sock, ssl.SSLSocket):
        with lock:  # not while the writer is inside the TLS object
            if sock.pending():
                return
    with contextlib.suppress(OSError, ValueError):  # closed: the DUL's own poll says so
        select.select([sock], [], [], _WAIT)


class _DirectSender:
    """``DIMSEServiceProvider.send_msg`` for one association: C-STORE requests written
    here, everything else passed to pynetdicom's own."""

    def __init__(
        self,
        assoc: Any,
        stall_timeout: float,
        fallback: Callable[[Any, int], None],
        bucket: TokenBucket | None,
        turn: threading.Lock,
    ) -> None:
        self._assoc = assoc
        self._bucket = bucket
        self._stall_timeout = stall_timeout
        self._fallback = fallback
        self._turn = turn

    def __call__(self, primitive: Any, context_id: int) -> None:
        if not isinstance(primitive, C_STORE) or primitive.MessageIDBeingRespondedTo is not None:
            self._fallback(primitive, context_id)
            return
        location = _file_only(primitive)
        if location is not None and not self._assoc.get_handlers(evt.EVT_DIMSE_SENT):
            # Nobody looks at the message object: encode the command set directly.
            self.send_file(primitive, context_id, location)
            return
        item, per_pdu, burst = self._sizes()
        message = C_STORE_RQ()
        message.primitive_to_message(primitive)
        message.context_id = context_id
        evt.trigger(self._assoc, evt.EVT_DIMSE_SENT, {"message": message})
        commands = _command_pdus(message, context_id, item)
        with _data_set(message) as (source, length):
            self._write(commands, source, length, context_id, per_pdu, burst)

    def _sizes(self) -> tuple[int, int, int]:
        """(PDV item limit, data bytes per PDU, data bytes per burst)."""
        peer_limit = self._assoc.dimse.maximum_pdu_size
        item = min(peer_limit, MAX_FRAGMENT) if peer_limit else MAX_FRAGMENT
        burst = BURST if self._bucket is None else self._bucket.fragment_size()
        return item, max(1, item - 6), burst

    def send_file(self, request: Any, context_id: int, location: tuple[Any, int]) -> None:
        """Write a C-STORE-RQ whose data set is the file ``location`` = (path, offset)
        from that offset; ``request`` has what :func:`c_store_command` reads. Returns
        without its last fragment when the message is given up (see the invariants).
        """
        _, per_pdu, burst = self._sizes()
        commands = _fragment(context_id, c_store_command(request), per_pdu)
        with _data_set_file(location) as (source, length):
            self._write(commands, source, length, context_id, per_pdu, burst)

    def _write(
        self,
        commands: list[bytes],
        source: IO[bytes] | None,
        length: int,
        context_id: int,
        per_pdu: int,
        burst: int,
    ) -> None:
        """Write the command PDUs and the data set's, ``burst`` data bytes at a time."""
        if not self._quiescent():
            return
        pending: list[bytes | memoryview] = list(commands)
        if source is None:
            self._send(b"".join(pending))
            return
        per_burst = max(1, burst // per_pdu) * per_pdu
        remaining = length
        while True:
            want = min(per_burst, remaining)
            chunk = memoryview(source.read(want))
            if len(chunk) != want:
                return  # the file ended early: no last fragment
            remaining -= want
            for start in range(0, want or 1, per_pdu):  # an empty data set: one empty PDV
                piece = chunk[start : start + per_pdu]
                last = remaining == 0 and start + per_pdu >= want
                n = len(piece)
                control = _LAST_DATA if last else _DATA
                pending.append(_HEADER.pack(0x04, 0x00, n + 6, n + 2, context_id, control))
                pending.append(piece)
            if not self._send(b"".join(pending)) or remaining == 0:
                return
            pending = []

    def _send(self, data: bytes) -> bool:
        """Write ``data`` (whole PDUs) to the socket; False when the message is given up."""
        if self._bucket is not None:
            self._bucket.take(len(data))
        dul = self._assoc.dul
        if not self._turn.acquire(timeout=self._stall_timeout):
            return False  # the reactor has held the socket that long: a stalled read
        try:
            if not dul.is_alive() or dul.state_machine.current_state != _DATA_TRANSFER:
                return False
            sock = dul.socket.socket if dul.socket is not None else None
            if sock is None:
                return False
            try:
                sock.sendall(data)
            except (OSError, ValueError):  # timed out, reset, closed
                dul.event_queue.put("Evt17")  # what AssociationSocket.send does on failure
                return False
            return True
        finally:
            self._turn.release()

    def _quiescent(self) -> bool:
        """Wait until the DUL has nothing of its own left to send; False if it stopped."""
        dul = self._assoc.dul
        queued = dul.to_provider_queue.queue  # the deque behind the Queue
        deadline = time.monotonic() + self._stall_timeout
        while True:
            if not dul.is_alive() or dul.state_machine.current_state != _DATA_TRANSFER:
                return False
            if not queued:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(_POLL)


def _command_pdus(message: Any, context_id: int, item: int) -> list[bytes]:
    """The command set's PDUs, fragmented by pynetdicom's own ``encode_msg``.

    Stops at the last command fragment, before the generator opens the data set.
    """
    pdus: list[bytes] = []
    fragments = message.encode_msg(context_id, item)
    try:
        for pdata in fragments:
            for pdv_context, value in pdata.presentation_data_value_list:
                pdus.append(encode_pdu(pdv_context, value[0], memoryview(value)[1:]))
                if value[0] == _LAST_COMMAND:
                    return pdus
    finally:
        fragments.close()
    return pdus


@contextlib.contextmanager
def _data_set(message: Any) -> Iterator[tuple[IO[bytes] | None, int]]:
    """The message's data set as (readable, length): its file from the data set's
    offset, its encoded bytes, or (None, 0) when it has none."""
    location = getattr(message, "_data_set_path", None)
    if location is not None:
        with _data_set_file(location) as opened:
            yield opened
        return
    encoded = message.data_set.getvalue() if message.data_set is not None else b""
    yield (io.BytesIO(encoded), len(encoded)) if encoded else (None, 0)


@contextlib.contextmanager
def _data_set_file(location: tuple[Any, int]) -> Iterator[tuple[IO[bytes], int]]:
    """The data set in a Part 10 file, from ``offset`` to the end: (readable, length)."""
    path, offset = location
    with Path(path).open("rb") as file:
        end = file.seek(0, io.SEEK_END)
        file.seek(offset)
        yield file, end - offset


def _file_only(primitive: Any) -> tuple[Any, int] | None:
    """(path, offset) of a C-STORE request whose data set stays in its file and whose
    command set :func:`c_store_command` encodes; None for anything else."""
    location = getattr(primitive, "_dataset_path", None)
    if (
        not isinstance(location, tuple)
        or primitive.MoveOriginatorApplicationEntityTitle is not None
        or primitive.MoveOriginatorMessageID is not None
    ):
        return None
    return location


def _element(tag: int, value: bytes) -> bytes:
    """One command element, implicit VR little endian (PS3.7 6.3.1)."""
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def _uid(value: Any) -> bytes:
    raw = str(value).encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def c_store_command(primitive: Any) -> bytes:
    """The C-STORE-RQ command set of ``primitive`` (a data set follows), encoded as
    pynetdicom's ``C_STORE_RQ.primitive_to_message`` + ``encode_msg`` encode it."""
    body = b"".join(
        (
            _element(0x0000_0002, _uid(primitive.AffectedSOPClassUID)),
            _element(0x0000_0100, struct.pack("<H", 0x0001)),  # CommandField: C-STORE-RQ
            _element(0x0000_0110, struct.pack("<H", primitive.MessageID)),
            _element(0x0000_0700, struct.pack("<H", primitive.Priority)),
            _element(0x0000_0800, struct.pack("<H", 0x0001)),  # a data set follows
            _element(0x0000_1000, _uid(primitive.AffectedSOPInstanceUID)),
        )
    )
    return _element(0x0000_0000, struct.pack("<I", len(body))) + body


def _fragment(context_id: int, command: bytes, per_pdu: int) -> list[bytes]:
    """The command set's PDUs: fragments of ``per_pdu`` bytes, the last one marked."""
    starts = range(0, len(command), per_pdu)
    return [
        encode_pdu(
            context_id,
            _LAST_COMMAND if start + per_pdu >= len(command) else 0x01,
            command[start : start + per_pdu],
        )
        for start in starts
    ]
