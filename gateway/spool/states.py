"""The states a capture goes through in the spool.

::

    HELD ──assigned or hold expired──▶ CAPTURED
    CAPTURED ──wrap──▶ WRAPPED ──C-STORE success──▶ SENT ──commitment──▶ COMMITTED ──▶ PURGED
        │                 │
        └──────┬──────────┘
               ▼
          QUARANTINED(reason)   kept on disk, shown with its reason, never sent

HELD: durable and acknowledged, waiting for a patient (no session was open on its
device, or the device's patient contradicted the session's); never wrapped or sent
until a technician assigns it or ``[context] hold_unidentified`` expires.
CAPTURED: the device's bytes are durable and the device was told "saved".
WRAPPED: the DICOM file is written; deliveries to each destination its routes name
are pending (:mod:`gateway.spool.routing`; no route: QUARANTINED with the reason).
SENT: every destination it routes to accepted the instance.
COMMITTED and PURGED belong to the storage-commitment and purge policies.
"""

from __future__ import annotations

import enum


class CaptureState(enum.StrEnum):
    """Lifecycle state of one capture (one SOP instance)."""

    HELD = "HELD"
    CAPTURED = "CAPTURED"
    WRAPPED = "WRAPPED"
    SENT = "SENT"
    COMMITTED = "COMMITTED"
    PURGED = "PURGED"
    QUARANTINED = "QUARANTINED"


class DeliveryState(enum.StrEnum):
    """State of one capture towards one destination."""

    PENDING = "PENDING"
    SENT = "SENT"
    COMMITTED = "COMMITTED"
    FAILED = "FAILED"
