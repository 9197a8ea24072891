"""A capture no route sends anywhere, on the real intake and wrapping stages: set aside
in the ledger and announced on the event bus (MQTT's ``capture_quarantined``, stage
``route``), whether it was written as DICOM at intake or by the wrapper."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.context.desk import TypedPatient
from gateway.core.capture import CaptureOffer, PatientContext
from tests.support.context import SCOPE, TECH, ContextRig, context_rig, jpeg

ONLY_THE_CAMERA = """
[[routes]]
match = { device = "camera" }
to = ["pacs"]
"""


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ContextRig]:
    async for r in context_rig(tmp_path, extra=ONLY_THE_CAMERA):
        yield r


def quarantined(rig: ContextRig) -> list[dict[str, Any]]:
    found = []
    while len(rig.events):
        seq, event = rig.events.peek()
        rig.events.pop(seq)
        if event["kind"] == "capture_quarantined":
            found.append(event)
    return found


async def test_unrouted_captures_are_set_aside_and_announced(rig: ContextRig) -> None:
    await rig.stage.open_session("scope", TypedPatient(PatientContext(patient_id="P-1")), TECH)
    data = jpeg(51)
    inline = await rig.capture("scope", SCOPE, CaptureOffer("u1", length=len(data)), data)
    raw = await rig.capture("scope", SCOPE, CaptureOffer("u2"), jpeg(52))  # wrapped later
    await rig.wrap_all()
    for receipt in (inline, raw):
        row = rig.row(receipt.spool_id)
        assert row["state"] == "QUARANTINED"
        assert row["reason"].startswith("no route sends it anywhere")
        assert "device scope" in row["reason"]
    events = quarantined(rig)
    assert [(e["spool_id"], e["stage"]) for e in events] == [
        (inline.spool_id, "route"),
        (raw.spool_id, "route"),
    ]
