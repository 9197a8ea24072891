"""The worklist query, answer decoding, local re-filter, search and the cache refresher.

Answers are built as a server sends them (encoded with their Specific Character
Set and decoded again by pydicom, as pynetdicom hands them over); the refresher
talks to a real pynetdicom worklist SCP and a real ledger.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import date
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom.dsutils import decode, encode

from gateway.context.worklist import WorklistFilter, build_query, decode_items
from gateway.context.worklist_source import WorklistSource, search
from gateway.core.capture import PatientContext
from gateway.core.config.context import WorklistSettings
from gateway.core.context import WorklistEntry
from gateway.core.events import EventBus
from gateway.demo.local_orthanc import free_port
from gateway.spool.ledger import Ledger
from gateway.status.web.data import DestinationFigures, DiskFigures, Figures, verdict
from gateway.status.web.pages import overview_fragment
from tests.support.worklist import FloodingWorklist, Item

DAY = date(2026, 12, 6)
WANTED = WorklistFilter(station="DERMGATE", modality="XC", first="20261205", last="20261207")


def _settings(**extra: object) -> WorklistSettings:
    base: dict[str, object] = {"ae_title": "RIS", "host": "127.0.0.1", "port": 104}
    return WorklistSettings.model_validate(base | extra)


def _on_the_wire(ds: Dataset) -> Dataset:
    """``ds`` encoded (explicit VR LE, in its character set) and decoded as
    pynetdicom does with a C-FIND response's identifier."""
    data = encode(ds, False, True)
    assert data is not None
    return decode(BytesIO(data), False, True)


def _answer(
    name: str = "Doe^Jane",
    pid: str = "PID1",
    study: str = "1.2.3",
    sps_id: str = "S1",
    *,
    charset: str = "ISO_IR 100",
    station: str = "DERMGATE",
    modality: str = "XC",
    day: str = "20261206",
) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.PatientName = name
    if pid:
        ds.PatientID = pid
    if study:
        ds.StudyInstanceUID = study
    sps = Dataset()
    sps.ScheduledStationAETitle = station
    sps.Modality = modality
    sps.ScheduledProcedureStepStartDate = day
    if sps_id:
        sps.ScheduledProcedureStepID = sps_id
    sps.ScheduledPerformingPhysicianName = "Ärztin^Eva"
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    return _on_the_wire(ds)


def test_query_keys_sit_in_the_sps_item_with_a_date_range_and_no_time() -> None:
    wanted = WorklistFilter.of(_settings(window_days=2), "DERMGATE", DAY)
    query = build_query(wanted)
    assert "QueryRetrieveLevel" not in query
    (sps,) = query.ScheduledProcedureStepSequence
    assert sps.ScheduledProcedureStepStartDate == "20261204-20261208"
    assert sps.ScheduledProcedureStepStartTime == ""
    assert sps.ScheduledStationAETitle == "DERMGATE"
    assert sps.Modality == ""  # "" = any modality: a return key
    assert query.PatientName == "" and query.PatientID == ""  # noqa: PT018
    (code,) = query.RequestedProcedureCodeSequence
    assert code.CodeValue == ""
    one_day = WorklistFilter.of(_settings(window_days=0, station_ae_title="DESK"), "X", DAY)
    assert one_day.date_range == "20261206"
    assert one_day.station == "DESK"
    assert WorklistFilter.of(_settings(station_ae_title=""), "DERMGATE", DAY).station == ""


def test_answers_are_decoded_with_their_character_set() -> None:
    answers = [
        _answer("Müller^Jürgen", "P1", "1.2.3", "S1", charset="ISO_IR 100"),
        _answer("長谷川^美穂子", "P2", "1.2.4", "S2", charset="ISO_IR 192"),
    ]
    decoded = decode_items(answers, WANTED, 5.0)
    names = [e.patient.patient_name for e in decoded.entries]
    assert names == ["Müller^Jürgen", "長谷川^美穂子"]
    # Nested items inherit the answer's character set.
    assert decoded.entries[0].performing_physician == "Ärztin^Eva"
    assert decoded.entries[0].key == "1.2.3/S1"
    assert decoded.entries[0].fetched_at == 5.0


def test_items_without_patient_id_or_study_are_skipped_by_count_only() -> None:
    answers = [
        _answer(pid=""),
        _answer(study="", sps_id="S2"),
        _answer(pid="", study="", sps_id="S3"),
        _answer(pid="P4", study="1.2.9", sps_id=""),  # no SPS ID: a digest key
    ]
    decoded = decode_items(answers, WANTED, 0.0)
    assert decoded.summary() == (
        "1 without Patient ID, 1 without Patient ID and Study Instance UID, "
        "1 without Study Instance UID"
    )
    assert "Doe" not in decoded.summary()
    (kept,) = decoded.entries
    assert kept.key.startswith("sha256:")
    assert "P4" not in kept.key


def test_over_returned_answers_are_filtered_locally() -> None:
    answers = [
        _answer(sps_id="S1"),
        _answer(sps_id="S2", station="OTHER"),
        _answer(sps_id="S3", modality="OT"),
        _answer(sps_id="S4", day="20261208"),
        _answer(sps_id="S5", day=""),
        _answer(sps_id="S1"),  # the same step twice
    ]
    decoded = decode_items(answers, WANTED, 0.0)
    assert [e.sps_id for e in decoded.entries] == ["S1"]
    assert decoded.filtered == 4
    assert decoded.skipped == {"repeated": 1}
    anything = WorklistFilter("", "", "20261205", "20261207")
    assert len(decode_items(answers[:4], anything, 0.0).entries) == 3


def _entry(name: str, pid: str, birth: str, accession: str) -> WorklistEntry:
    return WorklistEntry(
        key=pid,
        patient=PatientContext(patient_name=name, patient_id=pid, birth_date=birth),
        study_uid="1.2",
        accession_number=accession,
    )


def test_search_by_name_parts_id_birth_date_and_accession() -> None:
    items = [
        _entry("Müller^Jürgen", "PID0001", "19700102", "ACC-7"),
        _entry("Mueller^Anna^Maria", "PID0002", "19851231", "ACC-8"),
        _entry("長谷川^美穂子", "X-77", "19880229", ""),
    ]
    assert [i.key for i in search(items, "müller")] == ["PID0001"]
    assert [i.key for i in search(items, "MUELLER maria")] == ["PID0002"]
    assert [i.key for i in search(items, "jür")] == ["PID0001"]
    assert [i.key for i in search(items, "1985-12-31")] == ["PID0002"]
    assert [i.key for i in search(items, "19880229")] == ["X-77"]
    assert [i.key for i in search(items, "acc-8")] == ["PID0002"]
    assert [i.key for i in search(items, "pid000")] == ["PID0001", "PID0002"]
    assert [i.key for i in search(items, "美穂子")] == ["X-77"]
    assert search(items, "anna jürgen") == []
    assert len(search(items, "  ")) == 3


# --------------------------------------------------------------------------- refresher


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.start()
    yield ledger
    ledger.close()


def _items(n: int) -> list[Item]:
    return [Item(f"Pat^{k}", f"P{k}", f"1.2.826.9.{k}", f"S{k}", "20261206") for k in range(n)]


# pynetdicom 3.0.4 leaves the socket of a refused connection to the garbage collector
# (AssociationSocket.connect: shutdown() of an unconnected socket raises before close()).
@pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning")
async def test_refresh_shares_one_query_keeps_cache_on_outage_and_logs_changes_once(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    scp = FloodingWorklist(_items(3))
    scp.start()
    clock = [1000.0]
    bus = EventBus()
    bus.bind(asyncio.get_running_loop())
    events = bus.subscribe()
    source = WorklistSource(
        ledger,
        _settings(ae_title="FLOOD", port=scp.port, stale_after=60, timeout=3),
        "DERMGATE",
        bus,
        clock=lambda: clock[0],
        today=lambda: DAY,
    )
    caplog.set_level(logging.INFO, "gateway.context")
    try:
        first, second = await asyncio.gather(source.refresh(), source.refresh())
    finally:
        scp.stop()
    assert len(scp.queries) == 1
    assert first == second
    assert (first.items, first.stale, first.error, first.ok_at) == (3, False, None, 1000.0)
    assert [e.patient.patient_id for e in await source.items()] == ["P0", "P1", "P2"]

    # The SCP goes away (nothing listens on its port any more).
    source.settings = _settings(ae_title="FLOOD", port=free_port(), stale_after=60, timeout=3)
    clock[0] = 1030.0
    failed = await source.refresh()
    clock[0] = 1100.0
    again = await source.refresh()
    assert (failed.items, failed.stale, failed.ok_at) == (3, False, 1000.0)
    assert again.error is not None and again.error.startswith("unreachable")  # noqa: PT018
    assert again.stale
    assert again.age(clock[0]) == 100.0
    assert len(await source.items()) == 3
    section = source.section()
    assert section == {
        "configured": True,
        "items": 3,
        "age_s": 100.0,
        "stale": True,
        "truncated": False,
        "last_error": "unreachable",
    }
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once when it went away, not per refresh
    kinds = []
    while len(events):
        _, event = await events.get()
        kinds.append((event["kind"], event["items"], event["ok"]))
    assert kinds == [("worklist_refreshed", 3, True), ("worklist_refreshed", 3, False)]


def test_a_study_or_step_named_for_two_patients_is_never_used() -> None:
    answers = [
        _answer("A^A", "P1", "1.2.3", "S1"),
        _answer("B^B", "P2", "1.2.3", "S2"),  # the same study for another patient
        _answer("C^C", "P3", "1.2.4", "S1"),
        _answer("D^D", "P4", "1.2.4", "S1"),  # the same step for another patient
        _answer("E^E", "P5", "1.2.5", "S1"),
        _answer("E^E", "P5", "1.2.5", "S2"),  # one patient, two steps of one study
    ]
    decoded = decode_items(answers, WANTED, 0.0)
    assert [e.key for e in decoded.entries] == ["1.2.5/S1", "1.2.5/S2"]
    assert decoded.skipped == {
        "with a Study Instance UID shared by different patients": 2,
        "steps shared by different patients": 1,
        "repeated": 1,
    }


def test_the_overview_shows_the_worklists_size_and_age_and_asks_for_a_look_when_stale() -> None:
    def figures(worklist: dict[str, object]) -> Figures:
        return Figures(
            counts={},
            quarantined_open=0,
            oldest_waiting_age=None,
            commitment_lag=None,
            destinations=[DestinationFigures("pacs", "127.0.0.1", 104, False)],
            delivered_by_class={},
            quarantined_by_class={},
            disk=DiskFigures(free=10**9, total=10**10, reserve=10**6),
            worklist=worklist,
        )

    none = figures({"configured": False})
    assert 'id="worklist"' not in overview_fragment(none, verdict(none))
    fresh = figures({"configured": True, "items": 4, "age_s": 30.0, "stale": False})
    assert verdict(fresh).colour == "green"
    assert "<b>4</b>worklist items, 30 s old</div>" in overview_fragment(fresh, verdict(fresh))
    stale = figures(
        {"configured": True, "items": 4, "age_s": 3600.0, "stale": True,
         "last_error": "unreachable"}
    )  # fmt: skip
    seen = verdict(stale)
    assert seen.colour == "amber"
    assert seen.reasons == [
        "The worklist is stale (unreachable): patients picked may be out of date."
    ]
    assert "(stale)" in overview_fragment(stale, seen)


@pytest.mark.filterwarnings(
    "ignore:Invalid value for VR", "ignore:The value length"
)  # a careless RIS
def test_items_dicom_could_not_carry_are_skipped_never_copied_into_objects() -> None:
    answers = [
        _answer(pid="P1", study="1.2.03", sps_id="S1"),  # a leading zero: not a UID
        _answer(pid="P2", study="STUDY-7", sps_id="S2"),
        _answer(pid="P" * 65, study="1.2.5", sps_id="S3"),  # Patient ID is LO (64)
        _answer(pid="P4", study="1.2.6", sps_id="S4"),
    ]
    decoded = decode_items(answers, WANTED, 0.0)
    assert decoded.summary() == (
        "1 with a Patient ID DICOM cannot carry, 2 with an invalid Study Instance UID"
    )
    assert [e.patient.patient_id for e in decoded.entries] == ["P4"]
