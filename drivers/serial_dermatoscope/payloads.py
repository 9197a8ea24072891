"""Payload bytes of each message of the serial dermatoscope protocol (sans I/O).

CAPTURE_DATA's payload is binary (``u8 n | capture_id | u64 BE offset | chunk``);
every other payload is a UTF-8 JSON object, read strictly (no NaN or Infinity, no
duplicate keys, field types checked by the message classes of :mod:`.messages`).
:func:`encode_payload` and :func:`decode_payload` are inverse; framing the payload
(type, seq, CRC, COBS) is :mod:`.framing`'s.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Final

from drivers.serial_dermatoscope.messages import (
    Ack,
    CaptureBegin,
    CaptureData,
    CaptureEnd,
    Hello,
    HostHello,
    Message,
    MessageType,
    Nak,
    NakReason,
    ProtocolValueError,
    check_capture_id,
)

__all__ = ["decode_payload", "encode_payload", "salvage_capture_id"]

_OFFSET = struct.Struct(">Q")
_NAK_REASONS: Final = frozenset(reason.value for reason in NakReason)


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def encode_payload(message: Message) -> tuple[MessageType, bytes]:
    """The type and payload bytes of ``message``."""
    match message:
        case HostHello():
            return MessageType.HOST_HELLO, _json({"host": message.host, "version": message.version})
        case Hello():
            return MessageType.HELLO, _json(
                {
                    "manufacturer": message.manufacturer,
                    "model": message.model,
                    "serial": message.serial,
                    "firmware": message.firmware,
                    "capabilities": list(message.capabilities),
                }
            )
        case CaptureBegin():
            return MessageType.CAPTURE_BEGIN, _json(
                {
                    "capture_id": message.capture_id,
                    "length": message.length,
                    "timestamp": message.timestamp,
                    "polarization": message.polarization,
                    "contact": message.contact,
                    "immersion": message.immersion,
                    "magnification": message.magnification,
                    "color_temperature_k": message.color_temperature_k,
                    "anatomic_site": message.anatomic_site,
                    "laterality": message.laterality,
                    "lesion_id": message.lesion_id,
                }
            )
        case CaptureData():
            cid = message.capture_id.encode()
            return MessageType.CAPTURE_DATA, (
                bytes([len(cid)]) + cid + _OFFSET.pack(message.offset) + message.data
            )
        case CaptureEnd():
            return MessageType.CAPTURE_END, _json(
                {
                    "capture_id": message.capture_id,
                    "length": message.length,
                    "sha256": message.sha256,
                }
            )
        case Ack():
            return MessageType.ACK, _json({"capture_id": message.capture_id})
        case Nak():
            return MessageType.NAK, _json(
                {"capture_id": message.capture_id, "reason": str(message.reason)}
            )
    raise TypeError(f"not a protocol message: {message!r}")  # pragma: no cover


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _load_object(payload: bytes) -> dict[str, Any]:
    try:
        text = payload.decode("utf-8")
        obj = json.loads(
            text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ProtocolValueError(f"payload is not UTF-8 JSON: {type(err).__name__}") from None
    if not isinstance(obj, dict):
        raise ProtocolValueError("payload is not a JSON object")
    return obj


def _required(obj: dict[str, Any], key: str) -> Any:
    if key not in obj:
        raise ProtocolValueError(f"missing key {key!r}")
    return obj[key]


def decode_payload(msg_type: MessageType, payload: bytes) -> Message:
    """The message of type ``msg_type`` in ``payload``; raises :class:`ProtocolValueError`
    (or TypeError) when it is malformed."""
    if msg_type is MessageType.CAPTURE_DATA:
        if not payload:
            raise ProtocolValueError("empty CAPTURE_DATA payload")
        n = payload[0]
        if len(payload) < 1 + n + _OFFSET.size:
            raise ProtocolValueError("CAPTURE_DATA payload too short")
        try:
            capture_id = payload[1 : 1 + n].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolValueError("capture_id is not UTF-8") from None
        (offset,) = _OFFSET.unpack_from(payload, 1 + n)
        return CaptureData(capture_id, offset, payload[1 + n + _OFFSET.size :])

    obj = _load_object(payload)
    if msg_type is MessageType.HOST_HELLO:
        return HostHello(_required(obj, "host"), _required(obj, "version"))
    if msg_type is MessageType.HELLO:
        caps = _required(obj, "capabilities")
        if not isinstance(caps, list):
            raise ProtocolValueError("capabilities must be a list")
        return Hello(
            manufacturer=_required(obj, "manufacturer"),
            model=_required(obj, "model"),
            serial=_required(obj, "serial"),
            firmware=_required(obj, "firmware"),
            capabilities=tuple(caps),
        )
    if msg_type is MessageType.CAPTURE_BEGIN:
        return CaptureBegin(
            capture_id=_required(obj, "capture_id"),
            length=_required(obj, "length"),
            timestamp=obj.get("timestamp"),
            polarization=obj.get("polarization"),
            contact=obj.get("contact"),
            immersion=obj.get("immersion"),
            magnification=obj.get("magnification"),
            color_temperature_k=obj.get("color_temperature_k"),
            anatomic_site=obj.get("anatomic_site"),
            laterality=obj.get("laterality"),
            lesion_id=obj.get("lesion_id"),
        )
    if msg_type is MessageType.CAPTURE_END:
        return CaptureEnd(
            _required(obj, "capture_id"), _required(obj, "length"), _required(obj, "sha256")
        )
    if msg_type is MessageType.ACK:
        return Ack(_required(obj, "capture_id"))
    reason = _required(obj, "reason")
    if not isinstance(reason, str) or reason not in _NAK_REASONS:
        raise ProtocolValueError("unknown NAK reason")
    return Nak(_required(obj, "capture_id"), NakReason(reason))


def salvage_capture_id(msg_type: MessageType, payload: bytes) -> str | None:
    """Best effort: the capture id of a frame whose payload failed validation."""
    try:
        if msg_type is MessageType.CAPTURE_DATA:
            raw: object = payload[1 : 1 + payload[0]].decode("utf-8")
        else:
            raw = _load_object(payload).get("capture_id")
        return check_capture_id(raw)
    except (ProtocolValueError, UnicodeDecodeError, IndexError):
        return None
