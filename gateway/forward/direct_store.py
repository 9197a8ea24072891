"""One C-STORE of a Part 10 file, without pynetdicom's ``send_c_store`` per instance.

``Association.send_c_store(path)`` costs more CPU per small instance than the bytes
it sends: it reads the file's meta information into a pydicom ``Dataset``
(``split_dataset``: preamble, element parsing, value conversion), builds a
``C_STORE`` primitive whose setters validate each UID, and looks the presentation
context up among all the accepted ones. In a backlog drain of 73 KB instances that
was ~0.3 ms of the gateway's CPU per instance (``bench/README.md``, item 12).

:func:`store_file` does the same C-STORE with what is known already: the data set's
offset and the file's own SOP class, instance and transfer syntax come from the
raw bytes of the file meta group (:func:`read_meta`, explicit VR little endian, a
few hundred bytes), the context from a table built once per association
(:class:`DirectStore`), and the command set and P-DATA from
:mod:`gateway.forward.stream`. Everything else is pynetdicom's, as in
``send_c_store``: the association reactor is paused while the request is out, the
response comes from ``dimse.get_msg`` (decoded by the DUL's reactor), its status is
checked by ``_check_received_status``, and a missing response is handled by
``_handle_no_response`` (an A-ABORT after the DIMSE timeout, as before).

The file's own meta decides, not the ledger's, exactly as ``send_c_store`` did.
Anything this path does not cover goes to ``send_c_store`` unchanged: no exact
accepted context for the file's (class, syntax) (pynetdicom then raises
``ValueError``, as before), a file meta that is not plain (no ``DICM``, longer than
:data:`_HEAD`, an element it does not expect), an ``EVT_DIMSE_SENT`` handler bound
or no direct writer on the association. The command set and P-DATA are byte for
byte the same (message ID 1, priority 2: ``send_c_store``'s defaults).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydicom.dataset import Dataset
from pynetdicom import evt

from gateway.forward.stream import direct_sender

__all__ = ["DirectStore", "FileMeta", "read_meta", "store_status"]

_HEAD: Final = 4096
"""Bytes read to find the file meta group; a longer group goes pynetdicom's way."""

_LONG_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV"} | {b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_SHORT = struct.Struct("<HH2sH")
_LONG = struct.Struct("<HH2s2xI")
_LAST_COMMAND: Final = b"\x03"
_MESSAGE_ID: Final = 1
_PRIORITY: Final = 2  # LOW, send_c_store's default


@dataclass(frozen=True, slots=True)
class FileMeta:
    """What a C-STORE needs from a Part 10 file's meta group."""

    offset: int
    """Where the data set starts."""
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


def _text(value: bytes) -> str:
    return value.rstrip(b"\0 ").decode("ascii")


def read_meta(path: Path) -> FileMeta | None:
    """The meta group of the Part 10 file at ``path``, from its raw bytes; None when
    it is not a plain one (see the module docstring). Raises ``OSError``."""
    with path.open("rb") as file:
        head = file.read(_HEAD)
    if head[128:132] != b"DICM":
        return None
    found: dict[int, str] = {}
    position = 132
    try:
        while position + 8 <= len(head):
            group, element, vr, length = _SHORT.unpack_from(head, position)
            if group != 0x0002:
                break
            if vr in _LONG_VRS:
                group, element, vr, length = _LONG.unpack_from(head, position)
                start = position + 12
            else:
                start = position + 8
            end = start + length
            if end > len(head):
                return None
            if element in (0x0002, 0x0003, 0x0010):
                found[element] = _text(head[start:end])
            position = end
        else:
            return None  # the meta group runs past what was read
    except (struct.error, UnicodeDecodeError):
        return None
    if len(found) != 3:
        return None
    return FileMeta(position, found[0x0002], found[0x0003], found[0x0010])


class _Request:
    """What :func:`~gateway.forward.stream.c_store_command` reads of a primitive."""

    __slots__ = ("AffectedSOPClassUID", "AffectedSOPInstanceUID")
    MessageID: Final = _MESSAGE_ID
    Priority: Final = _PRIORITY

    def __init__(self, meta: FileMeta) -> None:
        self.AffectedSOPClassUID = meta.sop_class_uid
        self.AffectedSOPInstanceUID = meta.sop_instance_uid


_ELEMENT = struct.Struct("<HHI")
_US = struct.Struct("<H")
_C_STORE_RSP: Final = 0x8001
_NO_DATA_SET: Final = 0x0101


def store_status(command: bytes) -> int | None:
    """The Status of a C-STORE-RSP command set (implicit VR little endian, PS3.7
    9.3.1.2) that carries no data set; None for anything else (pynetdicom decodes it)."""
    values: dict[int, int] = {}
    position = 0
    try:
        while position < len(command):
            group, element, length = _ELEMENT.unpack_from(command, position)
            start = position + 8
            position = start + length
            if group != 0x0000 or position > len(command):
                return None
            if element in (0x0100, 0x0800, 0x0900):
                if length != 2:
                    return None
                values[element] = _US.unpack_from(command, start)[0]
    except struct.error:
        return None
    if values.get(0x0100) != _C_STORE_RSP or values.get(0x0800) != _NO_DATA_SET:
        return None
    return values.get(0x0900)


@dataclass(frozen=True, slots=True)
class _Answer:
    """A C-STORE-RSP decoded by :func:`store_status`, as put on the DIMSE queue."""

    status: int


class DirectStore:
    """C-STOREs of Part 10 files on one established association (see the module
    docstring); build it after :func:`~gateway.forward.stream.stream_c_store`."""

    def __init__(self, assoc: Any) -> None:
        self.assoc = assoc
        """The association it sends on."""
        self._contexts: dict[tuple[str, str], int] = {}
        for cx in assoc.accepted_contexts:
            if cx.as_scu is False:
                continue
            for syntax in cx.transfer_syntax:
                self._contexts.setdefault((str(cx.abstract_syntax), str(syntax)), cx.context_id)
        self._expecting = False
        self._receive: Callable[[Any], None] = assoc.dimse.receive_primitive
        assoc.dimse.receive_primitive = self._received

    def _received(self, primitive: Any) -> None:
        """On the DUL's reactor: a C-STORE-RSP that :meth:`__call__` waits for, whole
        in one PDV, decoded by :func:`store_status`; anything else by pynetdicom."""
        dimse = self.assoc.dimse
        if (
            self._expecting
            and dimse.message is None
            and not self.assoc.get_handlers(evt.EVT_DIMSE_RECV)
        ):
            values = primitive.presentation_data_value_list
            if len(values) == 1 and values[0][1][:1] == _LAST_COMMAND:
                context_id, value = values[0]
                status = store_status(value[1:])
                if status is not None:
                    self._expecting = False
                    dimse.msg_queue.put((context_id, _Answer(status)))
                    return
        self._receive(primitive)

    def __call__(self, path: Path) -> int | None:
        """Send the file at ``path``; the response's status (None: no valid response
        came). Raises what ``send_c_store`` raises (``ValueError``: no context;
        ``AttributeError``: meta missing; ``OSError``)."""
        assoc = self.assoc
        writer = direct_sender(assoc)
        meta = read_meta(path)
        context_id = (
            None
            if meta is None
            else self._contexts.get((meta.sop_class_uid, meta.transfer_syntax_uid))
        )
        if (
            meta is None
            or context_id is None
            or writer is None
            or assoc.get_handlers(evt.EVT_DIMSE_SENT)
        ):
            return _status(assoc.send_c_store(path))
        # As send_c_store: pause the association's reactor so that it does not take
        # the response off the queue, then send and wait for the answer.
        assoc._reactor_checkpoint.clear()
        try:
            while not assoc._is_paused and assoc.is_alive():  # a dead reactor never pauses
                time.sleep(0.0001)
            self._expecting = True
            writer.send_file(_Request(meta), context_id, (path, meta.offset))
            _, response = assoc.dimse.get_msg(block=True)
        finally:
            self._expecting = False
            assoc._reactor_checkpoint.set()
        if response is None:
            assoc._handle_no_response()
            return None
        if isinstance(response, _Answer):
            return response.status
        return _status(assoc._check_received_status(response))


def _status(answer: Dataset | None) -> int | None:
    """The Status of what ``send_c_store``/``_check_received_status`` return."""
    if not answer or "Status" not in answer:
        return None
    return int(answer.Status)
