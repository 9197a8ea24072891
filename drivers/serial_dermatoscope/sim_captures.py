"""What the simulated DS-100 holds and sends, without I/O: its captures and its offers.

:func:`plan_captures` decides what the device will capture and when,
:func:`take_content` makes each capture's bytes, and :class:`OfferEncoder` turns an
offer into the frames of :mod:`.protocol`, with the faults the simulator's
``--fault`` options ask for. The simulator (:mod:`.simulator`) does the I/O.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from drivers.serial_dermatoscope import protocol as p
from drivers.serial_dermatoscope.images import make_dermoscopy_jpeg

__all__ = [
    "CAPABILITIES",
    "CONTENT_FAULTS",
    "FIRMWARE",
    "KEEPALIVE_FAULTS",
    "MANUFACTURER",
    "MODEL",
    "TRANSFER_FAULTS",
    "LesionChoice",
    "OfferEncoder",
    "SimCapture",
    "plan_captures",
    "take_content",
]

log = logging.getLogger("dermgate.simulate.serial_dermatoscope")

MANUFACTURER = "DermGate Reference Devices"
MODEL = "DS-100 Dermatoscope"
FIRMWARE = "2.4.1"
CAPABILITIES = ("jpeg", "polarization", "contact", "anatomic-site", "lesion-id")

TRANSFER_FAULTS = ("crc", "truncate", "sha", "garbage", "duplicate-frame", "huge-length")
# The offer never ends: after part of its data the device keeps sending bytes that
# bring the capture no closer to its end, until the host NAKs it.
KEEPALIVE_FAULTS = ("keepalive-zeros", "repeat-last-data")
CONTENT_FAULTS = ("not-jpeg", "jpeg444")

# (CID 4029 keyword, laterality) pairs the simulated user picks from.
_SITES = (
    ("SkinOfAnteriorSurfaceOfForearm", "L"),
    ("SkinOfBack", "U"),
    ("SkinOfAnteriorSurfaceOfThigh", "R"),
    ("SkinOfCheek", "L"),
    ("SkinOfUpperAbdomen", "U"),
    ("SkinOfPosteriorSurfaceOfLowerLeg", "R"),
)
_IMMERSIONS = ("ULTRASOUND_GEL", "ALCOHOL", "WATER", "MINERAL_OIL", "PLASTIC_CAP")


def _anatomic_sites() -> list[tuple[str, str]]:
    """SNOMED CT code values (from pydicom's CID 4029 table) with a laterality."""
    from pydicom.sr._cid_dict import cid_concepts
    from pydicom.sr._concepts_dict import concepts

    allowed = set(cid_concepts[4029]["SCT"])
    sites: list[tuple[str, str]] = []
    for keyword, laterality in _SITES:
        if keyword not in allowed:
            continue
        codes = cast(dict[str, tuple[str, list[int]]], concepts["SCT"][keyword])
        sites.extend((code, laterality) for code, (_meaning, cids) in codes.items() if 4029 in cids)
    return sites


@dataclass(slots=True)
class SimCapture:
    """One capture held by the simulated device until the host ACKs it."""

    index: int
    capture_id: str
    available_at: float
    metadata: dict[str, Any]
    content: bytes | None = None
    acked: bool = False
    retry_at: float = 0.0
    offers: int = 0

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the capture's bytes."""
        assert self.content is not None
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True, slots=True)
class LesionChoice:
    """What the user set for every capture (``--lesion-id``, ``--anatomic-site``,
    ``--laterality``); None leaves the varied default of each capture."""

    lesion_id: str | None = None
    anatomic_site: str | None = None
    laterality: str | None = None

    def apply(self, metadata: dict[str, Any]) -> None:
        """Override the capture's lesion fields with the ones chosen."""
        if self.lesion_id is not None:
            metadata["lesion_id"] = self.lesion_id
        if self.anatomic_site is not None:
            metadata["anatomic_site"] = self.anatomic_site
            metadata["laterality"] = self.laterality
        elif self.laterality is not None:
            metadata["laterality"] = self.laterality


def plan_captures(
    count: int, interval: float, started: float, lesion: LesionChoice | None = None
) -> list[SimCapture]:
    """The captures the device will take: one every ``interval`` seconds from ``started``
    (monotonic), with metadata varied the way a user varies it, the ``lesion`` chosen
    (if any) on every one."""
    sites = _anatomic_sites()
    clock = datetime.now().replace(microsecond=0)
    captures = []
    for k in range(count):
        contact = "NON_CONTACT" if k % 3 == 2 else "CONTACT"
        site, laterality = sites[k % len(sites)] if sites and k % 4 != 3 else (None, None)
        metadata: dict[str, Any] = {
            "timestamp": None
            if k % 6 == 5
            else (clock + timedelta(seconds=k * max(interval, 1.0))).isoformat(),
            "polarization": "POLARIZED" if k % 2 == 0 else "NON_POLARIZED",
            "contact": contact,
            "immersion": _IMMERSIONS[k % len(_IMMERSIONS)] if contact == "CONTACT" else None,
            "magnification": 10.0 if k % 4 < 2 else 20.0,
            "color_temperature_k": (4500, 5500, 6500)[k % 3],
            "anatomic_site": site,
            "laterality": laterality,
            "lesion_id": f"L{k // 2 + 1}" if k % 2 == 0 else None,
        }
        if lesion is not None:
            lesion.apply(metadata)
        captures.append(
            SimCapture(
                index=k + 1,
                capture_id=f"{k + 1:06d}",
                available_at=started + k * interval,
                metadata=metadata,
            )
        )
    return captures


def take_content(
    capture: SimCapture, *, seed: int, faults: set[str], width: int, height: int
) -> bytes:
    """The capture's bytes, made when first asked for (a JPEG, or per ``faults`` not one)."""
    if capture.content is None:
        image_seed = capture.index - 1 + seed
        if capture.index == 1 and "not-jpeg" in faults:
            capture.content = random.Random(image_seed).randbytes(50_000)
        else:
            capture.content = make_dermoscopy_jpeg(
                image_seed,
                width=width,
                height=height,
                subsampling="4:4:4" if capture.index == 1 and "jpeg444" in faults else "4:2:0",
            )
        log.info("capture %s taken (%d bytes)", capture.capture_id, len(capture.content))
    return capture.content


class OfferEncoder:
    """The frames the device sends (numbered by its own seq), faults included."""

    def __init__(self, faults: set[str], rng: random.Random) -> None:
        """Encode with the device's ``faults`` (shared, not copied); ``rng`` makes garbage."""
        self.faults = faults
        self.rng = rng
        self.seq = 0

    def _next_seq(self) -> int:
        seq = self.seq
        self.seq = (self.seq + 1) & 0xFFFF
        return seq

    def frame(self, message: p.Message) -> bytes:
        """``message`` as the next frame on the wire."""
        return p.encode_frame(message, self._next_seq())

    def offer(self, capture: SimCapture) -> tuple[list[bytes], bytes | None]:
        """The frames of one offer of ``capture`` (its content taken), faults included;
        and, for a keep-alive fault, the bytes repeated after them instead of an end."""
        assert capture.content is not None
        content = capture.content
        faults = self.faults if capture.index == 1 and capture.offers == 1 else set()
        cid = capture.capture_id
        # huge-length: a CAPTURE_BEGIN announcing 2^63-1 bytes (a claim, not the truth).
        announced = 2**63 - 1 if "huge-length" in faults else len(content)
        frames = [self.frame(p.CaptureBegin(cid, announced, **capture.metadata))]
        if "garbage" in faults:
            frames.append(self.rng.randbytes(48) + b"\x00" + self.rng.randbytes(16) + b"\x00")
        chunks = [
            p.CaptureData(cid, offset, content[offset : offset + p.DATA_CHUNK])
            for offset in range(0, len(content), p.DATA_CHUNK)
        ]
        victim = len(chunks) // 2 if "crc" in faults else -1
        data: list[bytes] = []
        for number, chunk in enumerate(chunks):
            if number == victim:
                body = bytearray(p.encode_body(chunk, self._next_seq()))
                body[len(body) // 2] ^= 0x5A  # CRC left as it was
                data.append(p.cobs_encode(bytes(body)) + b"\x00")
            else:
                data.append(self.frame(chunk))
        if "truncate" in faults and data:
            data.pop()
        if "duplicate-frame" in faults and data:
            data.insert(1, data[0])
        if "garbage" in faults and len(data) > 1:
            data.insert(1, self.rng.randbytes(32) + b"\x00")
        if "keepalive-zeros" in faults or ("repeat-last-data" in faults and data):
            # Part of the data, then filler that brings the capture no closer to its
            # end: lone 0x00 bytes (a frame delimiter, allowed at any time) after half
            # the data, or the last DATA frame again after all of it. No CAPTURE_END.
            zeros = "keepalive-zeros" in faults
            frames += data[: max(1, len(data) // 2)] if zeros else data
            log.info("offer of %s carries faults: %s", cid, ", ".join(sorted(faults)))
            return frames, b"\x00" if zeros else data[-1]
        frames += data
        sha = capture.sha256
        if "sha" in faults:
            sha = hashlib.sha256(content + b"\x01").hexdigest()
        frames.append(self.frame(p.CaptureEnd(cid, len(content), sha)))
        if faults:
            log.info("offer of %s carries faults: %s", cid, ", ".join(sorted(faults)))
        return frames, None
