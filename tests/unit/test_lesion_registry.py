"""The lesion registry (gateway.spool.lesions) and the lesion desk on a real ledger.

A label names a lesion only within one patient, a Tracking UID is minted once and
read back for ever, and a session's lesion request finds or creates the right one.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.context.desk import Actor, ContextError, ContextErrorCode, LesionRequest
from gateway.context.lesion_desk import LesionDesk
from gateway.core.capture import Laterality
from gateway.core.uids import tracking_uid
from gateway.spool import lesions as registry
from gateway.spool.ledger import Ledger
from gateway.spool.schema import open_ledger, transaction

ACTOR = Actor("user", "tech")
BACK = "66643007"  # SCT "Skin of back"
FOREARM = "70559009"  # SCT "Skin of anterior surface of forearm"


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A fresh ledger at the current schema."""
    connection = open_ledger(tmp_path / "ledger.sqlite3")
    yield connection
    connection.close()


def test_device_label_is_one_lesion_per_patient(conn: sqlite3.Connection) -> None:
    """The same label on the same patient is the same lesion; on another patient another."""
    first = registry.lesion_for_device_label(conn, "P1", "HOSP", "L1", BACK, Laterality.LEFT)
    again = registry.lesion_for_device_label(conn, "P1", "HOSP", "L1", None, None)
    other = registry.lesion_for_device_label(conn, "P2", "HOSP", "L1", BACK, Laterality.LEFT)
    other_issuer = registry.lesion_for_device_label(conn, "P1", "CLINIC", "L1", BACK, None)
    assert again == first
    assert first.tracking_id == "L1"
    assert first.site == BACK
    assert first.laterality is Laterality.LEFT
    assert len({first.tracking_uid, other.tracking_uid, other_issuer.tracking_uid}) == 3
    # the UID the builders derive for a device-named lesion without a session
    assert first.tracking_uid == tracking_uid("HOSP", "P1", "L1")


def test_device_label_is_cleaned_and_fills_a_missing_site(conn: sqlite3.Connection) -> None:
    """Control characters and backslashes never reach a Tracking ID; a site the registry
    lacks is taken from the device, one it has is kept."""
    lesion = registry.lesion_for_device_label(conn, "P1", "", " mole\n\\2\x1b ", None, None)
    assert lesion.tracking_id == "mole/2"
    filled = registry.lesion_for_device_label(conn, "P1", "", "mole/2", BACK, Laterality.RIGHT)
    assert (filled.site, filled.laterality) == (BACK, Laterality.RIGHT)
    kept = registry.lesion_for_device_label(conn, "P1", "", "mole/2", FOREARM, Laterality.LEFT)
    assert (kept.site, kept.laterality, kept.tracking_uid) == (
        BACK,
        Laterality.RIGHT,
        lesion.tracking_uid,
    )
    long = registry.lesion_for_device_label(conn, "P1", "", "x" * 200, None, None)
    assert len(long.tracking_id) == registry.TRACKING_ID_MAX
    with pytest.raises(ValueError, match="no printable characters"):
        registry.lesion_for_device_label(conn, "P1", "", "\n\t", None, None)
    with pytest.raises(ValueError, match="needs a Patient ID"):
        registry.lesion_for_device_label(conn, "", "", "L1", None, None)


def test_new_lesions_get_the_next_label_never_reused(conn: sqlite3.Connection) -> None:
    """L01, L02… per patient, continuing after device labels of the same form."""
    a = registry.create_lesion(conn, "P1", "", site=BACK)
    b = registry.create_lesion(conn, "P1", "", site=BACK)  # a second mole on the back
    registry.lesion_for_device_label(conn, "P1", "", "L07", None, None)
    c = registry.create_lesion(conn, "P1", "", site=FOREARM, laterality=Laterality.LEFT)
    d = registry.create_lesion(conn, "P2", "", site=BACK)
    assert [a.tracking_id, b.tracking_id, c.tracking_id, d.tracking_id] == [
        "L01",
        "L02",
        "L08",
        "L01",
    ]
    assert len({a.tracking_uid, b.tracking_uid, c.tracking_uid, d.tracking_uid}) == 4
    assert [r.tracking_id for r in registry.patient_lesions(conn, "P1", "")] == [
        "L01",
        "L02",
        "L07",
        "L08",
    ]
    found = registry.lesion_by_tracking_id(conn, "P1", "", "L02")
    assert found is not None
    assert found.tracking_uid == b.tracking_uid


def test_registry_writes_join_the_callers_transaction(conn: sqlite3.Connection) -> None:
    """Called inside an open transaction (the context stage binding a capture), a new
    lesion is part of it: rolled back with it, committed with it."""
    conn.execute("BEGIN IMMEDIATE")
    registry.lesion_for_device_label(conn, "P1", "", "L1", BACK, None)
    registry.create_lesion(conn, "P1", "", site=BACK)
    conn.execute("ROLLBACK")
    assert registry.patient_lesions(conn, "P1", "") == []
    with transaction(conn):
        kept = registry.lesion_for_device_label(conn, "P1", "", "L1", BACK, None)
    assert [r.tracking_uid for r in registry.patient_lesions(conn, "P1", "")] == [kept.tracking_uid]


# --- the desk ---------------------------------------------------------------------------


class Desk(LesionDesk):
    """The mixin on its own, with the one attribute it needs."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger


def open_session(conn: sqlite3.Connection, device: str, patient_id: str, issuer: str) -> int:
    """A session row as the sessions stage writes it (patient as PatientContext JSON)."""
    patient = {"patient_id": patient_id, "issuer_of_patient_id": issuer, "patient_name": "X^Y"}
    cursor = conn.execute(
        "INSERT INTO sessions (device, source, patient_json, study_uid, opened_at, opened_by) "
        "VALUES (?, 'manual', ?, '2.25.1', '2026-01-01T00:00:00', 'user:tech')",
        (device, json.dumps(patient)),
    )
    return int(cursor.lastrowid or 0)


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[tuple[Desk, sqlite3.Connection]]:
    """The desk on a started ledger, and a second connection to arrange sessions."""
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.start()
    side = open_ledger(tmp_path / "ledger.sqlite3")
    yield Desk(ledger), side
    side.close()
    ledger.close()


async def test_site_request_finds_or_creates_and_becomes_current(
    desk: tuple[Desk, sqlite3.Connection],
) -> None:
    """A site request creates a lesion, an identical one finds it, a described one is new;
    the chosen lesion is the session's current one."""
    d, conn = desk
    sid = open_session(conn, "dermatoscope", "P1", "HOSP")
    first = await d.set_lesion(
        sid, LesionRequest(site=f"SCT:{BACK}", laterality=Laterality.LEFT), ACTOR
    )
    same = await d.set_lesion(sid, LesionRequest(site=BACK, laterality=Laterality.LEFT), ACTOR)
    second = await d.set_lesion(
        sid, LesionRequest(site=BACK, laterality=Laterality.LEFT, description="lower mole"), ACTOR
    )
    assert (first.tracking_id, first.site_meaning, first.laterality) == (
        "L01",
        "Skin of back",
        Laterality.LEFT,
    )
    assert same == first
    assert second.tracking_id == "L02"
    assert second.tracking_uid != first.tracking_uid
    current = registry.session_lesion(conn, sid)
    assert current is not None
    assert current.tracking_uid == second.tracking_uid
    picked = await d.set_lesion(sid, LesionRequest(tracking_id="L01"), ACTOR)
    assert picked == first
    current = registry.session_lesion(conn, sid)
    assert current is not None
    assert current.id == first.id
    assert [v.tracking_id for v in await d.lesions(sid)] == ["L01", "L02"]
    mid_back = await d.set_lesion(sid, LesionRequest(site="DCM:130323"), ACTOR)
    assert (mid_back.site_scheme, mid_back.site_meaning) == ("DCM", "Skin of mid back")


async def test_lesions_belong_to_the_patient_not_the_session(
    desk: tuple[Desk, sqlite3.Connection],
) -> None:
    """Another session of the same patient sees the lesion; another patient's does not."""
    d, conn = desk
    one = open_session(conn, "dermatoscope", "P1", "HOSP")
    confocal = open_session(conn, "confocal", "P1", "HOSP")
    stranger = open_session(conn, "camera", "P2", "HOSP")
    made = await d.set_lesion(one, LesionRequest(site=BACK), ACTOR)
    again = await d.set_lesion(confocal, LesionRequest(tracking_id=made.tracking_id), ACTOR)
    assert again.tracking_uid == made.tracking_uid
    with pytest.raises(ContextError) as refused:
        await d.set_lesion(stranger, LesionRequest(tracking_id=made.tracking_id), ACTOR)
    assert refused.value.code is ContextErrorCode.BAD_LESION
    assert await d.lesions(stranger) == []


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (LesionRequest(tracking_id="L09"), ContextErrorCode.BAD_LESION),
        (LesionRequest(), ContextErrorCode.BAD_LESION),
        (LesionRequest(tracking_id="L01", site=BACK), ContextErrorCode.BAD_LESION),
        (LesionRequest(site="SCT:12345"), ContextErrorCode.UNKNOWN_SITE),
        (LesionRequest(site="back"), ContextErrorCode.UNKNOWN_SITE),
        (LesionRequest(site=BACK, description="x" * 65), ContextErrorCode.BAD_LESION),
        (LesionRequest(site=BACK, description="a\nb"), ContextErrorCode.BAD_LESION),
    ],
)
async def test_bad_requests_are_refused_with_their_code(
    desk: tuple[Desk, sqlite3.Connection], request_: LesionRequest, code: ContextErrorCode
) -> None:
    """Each bad request is a typed refusal and creates nothing."""
    d, conn = desk
    sid = open_session(conn, "dermatoscope", "P1", "HOSP")
    with pytest.raises(ContextError) as refused:
        await d.set_lesion(sid, request_, ACTOR)
    assert refused.value.code is code
    assert "P1" not in refused.value.message
    assert await d.lesions(sid) == []


async def test_closed_or_unknown_session_is_refused(desk: tuple[Desk, sqlite3.Connection]) -> None:
    """An ended session takes no lesion; an unknown one is NO_SUCH_SESSION."""
    d, conn = desk
    sid = open_session(conn, "dermatoscope", "P1", "HOSP")
    conn.execute("UPDATE sessions SET closed_at = '2026-01-01T01:00:00' WHERE id = ?", (sid,))
    with pytest.raises(ContextError) as closed:
        await d.set_lesion(sid, LesionRequest(site=BACK), ACTOR)
    assert closed.value.code is ContextErrorCode.SESSION_CLOSED
    with pytest.raises(ContextError) as unknown:
        await d.lesions(sid + 100)
    assert unknown.value.code is ContextErrorCode.NO_SUCH_SESSION
