"""A technician's sensitive flag and the routes, on the real context stage.

Real ledger, intake, wrapping and context stages (tests.support.context.ContextRig)
with two destinations and a route that keeps sensitive captures from "research": a
flag withdraws what is not sent yet, before the object is even rewritten; unflagging
brings research back only when nothing else (the session) still makes it sensitive.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.context.desk import TypedPatient
from gateway.core.capture import CaptureOffer, PatientContext
from tests.support.context import SCOPE, TECH, ContextRig, context_rig, jpeg

JANE = PatientContext(patient_name="Doe^Jane", patient_id="PID-4711")

ROUTES = """
[[destinations]]
name = "research"
kind = "dicom"
ae_title = "RESEARCH"
host = "127.0.0.1"
port = 105

[[routes]]
to = ["pacs"]

[[routes]]
match = { sensitive = false }
to = ["research"]
"""


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ContextRig]:
    async for r in context_rig(tmp_path, extra=ROUTES):
        yield r


def destinations(rig: ContextRig, spool_id: int) -> set[str]:
    conn = sqlite3.connect(rig.ledger.path)
    try:
        rows = conn.execute("SELECT destination FROM deliveries WHERE capture_id = ?", (spool_id,))
        return {str(r[0]) for r in rows}
    finally:
        conn.close()


async def test_a_flag_withdraws_research_and_an_unflag_brings_it_back(
    rig: ContextRig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await rig.stage.open_session("scope", TypedPatient(JANE), TECH)
    data = jpeg(41)
    waiting = await rig.capture("scope", SCOPE, CaptureOffer("r1", length=len(data)), data)
    assert destinations(rig, waiting.spool_id) == {"pacs", "research"}
    assert await rig.stage.flag_capture(waiting.spool_id, True, TECH)
    assert destinations(rig, waiting.spool_id) == {"pacs"}
    assert f"spool id {waiting.spool_id}: no longer sent to research" in caplog.text
    assert await rig.stage.flag_capture(waiting.spool_id, False, TECH)
    assert destinations(rig, waiting.spool_id) == {"pacs", "research"}
    assert f"spool id {waiting.spool_id}: now also sent to research" in caplog.text
    assert "PID-4711" not in caplog.text


async def test_unflagging_a_capture_of_a_sensitive_session_keeps_research_away(
    rig: ContextRig,
) -> None:
    session = await rig.stage.open_session("scope", TypedPatient(JANE), TECH)
    await rig.stage.flag_session(session.id, True, TECH)
    data = jpeg(42)
    waiting = await rig.capture("scope", SCOPE, CaptureOffer("r2", length=len(data)), data)
    assert destinations(rig, waiting.spool_id) == {"pacs"}, "sensitive from arrival"
    await rig.stage.flag_capture(waiting.spool_id, True, TECH)
    await rig.stage.flag_capture(waiting.spool_id, False, TECH)
    assert rig.row(waiting.spool_id)["sensitive"] == 1, "the session still makes it sensitive"
    assert destinations(rig, waiting.spool_id) == {"pacs"}


async def test_a_raw_capture_flagged_before_wrapping_never_gets_research(rig: ContextRig) -> None:
    await rig.stage.open_session("scope", TypedPatient(JANE), TECH)
    raw = await rig.capture("scope", SCOPE, CaptureOffer("r3"), jpeg(43))  # size unknown: raw
    assert rig.row(raw.spool_id)["state"] == "CAPTURED"
    await rig.stage.flag_capture(raw.spool_id, True, TECH)
    await rig.wrap_all()
    assert rig.row(raw.spool_id)["state"] == "WRAPPED"
    assert destinations(rig, raw.spool_id) == {"pacs"}


async def test_a_capture_moved_into_a_sensitive_session_loses_research(
    rig: ContextRig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await rig.stage.open_session("scope", TypedPatient(JANE), TECH)
    data = jpeg(44)
    waiting = await rig.capture("scope", SCOPE, CaptureOffer("r4", length=len(data)), data)
    assert destinations(rig, waiting.spool_id) == {"pacs", "research"}
    other = PatientContext(patient_name="Roe^Rita", patient_id="PID-0815")
    target = await rig.stage.open_session("camera", TypedPatient(other), TECH)
    await rig.stage.flag_session(target.id, True, TECH)
    await rig.stage.assign([waiting.spool_id], target.id, None, TECH)
    row = rig.row(waiting.spool_id)
    assert (row["state"], row["sensitive"]) == ("WRAPPED", 1)
    assert destinations(rig, waiting.spool_id) == {"pacs"}
    assert f"spool id {waiting.spool_id}: no longer sent to research" in caplog.text
