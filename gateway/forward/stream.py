"""Stream a C-STORE from its file with back-pressure, so memory stays flat.

Why pynetdicom alone grows with the object. With
``_config.STORE_SEND_CHUNKED_DATASET``, ``Association.send_c_store(path)`` leaves the
data set in the file (``C_STORE._dataset_path``) and calls
``DIMSEServiceProvider.send_msg``, which iterates ``DIMSEMessage.encode_msg``: a
generator that ``f.read()``\\s ``max_pdu_length - 6`` bytes per step and yields one
``P_DATA`` primitive per fragment. ``send_msg`` hands each to
``DULServiceProvider.send_pdu``, which only puts it on ``to_provider_queue``, an
unbounded ``queue.Queue``, and returns at once. The socket is written by another
thread, the DUL reactor (``run_reactor``), one primitive per turn of its loop
(``_process_recv_primitive`` → Evt9 → ``fsm.DT_1`` → ``P_DATA_TF(...).encode()`` →
``AssociationSocket.send``, which blocks while the peer's TCP window is full). A
16 KiB read from the page cache takes microseconds; the reactor's turn and the peer
(Orthanc parsing and writing to disk, ~50 MB/s) take far longer; and nothing ever
makes the reader wait, so the calling thread reads ahead and the queue holds every
fragment read but not yet sent: 465-550 MB peak RSS for a 1 GB object against 73 MB
for 20 MB (``bench/memory.py``). A peer announcing an unlimited (0) maximum PDU
length is worse still: ``encode_msg`` then reads the whole data set in one call
(635 MB peak for a 200 MB object). And since pynetdicom clears the socket timeout
after connecting, a PACS that stops reading mid-object blocks the DUL in
``socket.send`` for ever, and ``send_c_store`` with it.

The fix, at the depth of the cause: :func:`stream_c_store` replaces ``send_msg`` on
one association with the same few steps (``C_STORE_RQ.primitive_to_message``,
``EVT_DIMSE_SENT``, ``encode_msg``, ``DULServiceProvider.send_pdu``) plus what they
lack: once :data:`QUEUE_BYTES` of fragments wait in the DUL's queue it waits
until half of them have gone to the socket; it caps fragments at :data:`MAX_FRAGMENT` bytes (always
allowed: the peer's maximum is an upper bound); and it stops reading when the DUL
no longer drains (its thread is gone, the association left data transfer, or
nothing left the queue for ``stall_timeout`` seconds), so a dead or frozen peer
costs neither memory nor the rest of the file. A message cut short never gets its
last fragment, so the peer cannot mistake it for a whole object; pynetdicom then
waits ``dimse_timeout`` for a response that does not come and aborts, which the
sender reports as retryable. The socket also gets that timeout, so a write to a
peer that stopped reading fails (the DUL sees the connection closed) instead of
blocking for ever. Other DIMSE messages go through pynetdicom's own ``send_msg``
unchanged. Not chosen: a bounded ``to_provider_queue`` (its blocking ``put`` never
returns once the DUL is gone, and it would hold back A-ABORT and A-RELEASE too) and
a patch to the installed pynetdicom (lost at the next ``pip install``).

This relies on pynetdicom 3.0.x's ``DIMSEServiceProvider.send_msg``,
``DIMSEMessage.encode_msg`` and ``DULServiceProvider.to_provider_queue`` (all
public names); ``tests/e2e/test_cstore_memory.py`` checks the result against a real PACS.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any, Final

from pynetdicom import evt
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE

from gateway.forward.bucket import TokenBucket

__all__ = ["MAX_FRAGMENT", "QUEUE_BYTES", "stream_c_store"]

MAX_FRAGMENT: Final = 256 * 1024
"""Largest P-DATA-TF PDU we send, whatever larger size the peer accepts (bytes)."""

QUEUE_BYTES: Final = 4 * 1024 * 1024
"""How much C-STORE data may wait in the DUL's queue for the socket (bytes)."""

_POLL: Final = 0.002
"""Seconds between looks at a full queue: half the queue lasts far longer than this."""

_DATA_TRANSFER: Final = "Sta6"


def stream_c_store(assoc: Any, *, stall_timeout: float, bucket: TokenBucket | None = None) -> None:
    """Make every C-STORE request on ``assoc`` stream from its file with back-pressure.

    Call once, right after the association is established. ``stall_timeout`` (the
    destination's network timeout) is how long the DUL may take no fragment from its
    queue before the message is given up, and becomes the socket's timeout.
    ``bucket`` (the destination's ``max_mbps``, shared by its associations) paces
    the fragments: each waits for its bytes before it is queued for the socket.
    """
    sock = assoc.dul.socket
    if sock is not None and sock.socket is not None:
        sock.socket.settimeout(stall_timeout)
    assoc.dimse.send_msg = _PacedSender(assoc, stall_timeout, assoc.dimse.send_msg, bucket)


class _PacedSender:
    """``DIMSEServiceProvider.send_msg`` for one association, paced by the DUL."""

    def __init__(
        self,
        assoc: Any,
        stall_timeout: float,
        fallback: Callable[[Any, int], None],
        bucket: TokenBucket | None = None,
    ) -> None:
        self._assoc = assoc
        self._bucket = bucket
        self._stall_timeout = stall_timeout
        self._fallback = fallback

    def __call__(self, primitive: Any, context_id: int) -> None:
        if not isinstance(primitive, C_STORE) or primitive.MessageIDBeingRespondedTo is not None:
            self._fallback(primitive, context_id)
            return
        message = C_STORE_RQ()
        message.primitive_to_message(primitive)
        message.context_id = context_id
        evt.trigger(self._assoc, evt.EVT_DIMSE_SENT, {"message": message})

        peer_limit = self._assoc.dimse.maximum_pdu_size
        fragment = min(peer_limit, MAX_FRAGMENT) if peer_limit else MAX_FRAGMENT
        if self._bucket is not None:  # small writes often on a slow link, not big ones rarely
            fragment = min(fragment, self._bucket.fragment_size())
        queued_max = max(2, QUEUE_BYTES // fragment)
        fragments = message.encode_msg(context_id, fragment)
        try:
            for pdata in fragments:
                if not self._wait_for_room(queued_max):
                    return
                if self._bucket is not None:
                    self._bucket.take(sum(len(v) for _, v in pdata.presentation_data_value_list))
                self._assoc.dul.send_pdu(pdata)
        finally:
            if isinstance(fragments, Generator):
                fragments.close()  # closes the file when we stopped early

    def _wait_for_room(self, queued_max: int) -> bool:
        """True when one more fragment may be queued; False when the DUL stopped draining.

        Below ``queued_max`` queued primitives, at once. At ``queued_max``, only once
        half of them have gone: the DUL then has plenty left to send while this
        thread refills the queue, and the two threads hand the GIL to each other far
        less often than one fragment at a time.
        """
        queued = self._assoc.dul.to_provider_queue.queue  # the deque behind the Queue
        if len(queued) < queued_max:
            return True
        low_water = queued_max // 2
        dul = self._assoc.dul
        last_length = len(queued)
        last_progress = time.monotonic()
        while len(queued) > low_water:
            if not dul.is_alive() or dul.state_machine.current_state != _DATA_TRANSFER:
                return False
            now = time.monotonic()
            if len(queued) < last_length:
                last_progress = now
            elif now - last_progress > self._stall_timeout:
                return False
            last_length = len(queued)
            time.sleep(_POLL)
        return True
