"""The worklist query against two real SCPs that honour different keys.

Orthanc's worklist plugin and DCMTK's wlmscpfs are fed the same ``.wl`` files (made
with ``dump2dcm``): the items for this box's station, modality and date window are
found on both, with non-ASCII names in ISO_IR 100 and UTF-8 decoded right; items for
another station, modality or day never reach the cache, even from a server that
returns them; and a server that answers more than ``max_items`` is cancelled.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from gateway.context.worklist_fetch import (
    WorklistError,
    WorklistFailure,
    fetch_worklist,
)
from gateway.core.config.context import WorklistSettings
from gateway.demo.local_orthanc import OrthancProcess
from gateway.demo.worklist import (
    WORKLIST_PLUGIN,
    demo_patients,
    orthanc_worklist_settings,
    write_demo_worklist,
)
from tests.support.worklist import FloodingWorklist, Item, WorklistServer, write_items

TODAY = date.today()


def _day(offset: int) -> str:
    return (TODAY + timedelta(days=offset)).strftime("%Y%m%d")


def _items() -> list[Item]:
    return [
        Item("Müller^Jürgen", "PID0001", "1.2.826.0.1.3680043.8.498.101", "SPS1", _day(0),
             accession="ACC1", birth_date="19700102", sex="M", time="0930"),
        Item("Łukasiewicz^Zoë", "PID0002", "1.2.826.0.1.3680043.8.498.102", "SPS2", _day(1),
             accession="ACC2", birth_date="19851231", sex="F", charset="ISO_IR 192"),
        Item("Other^Station", "PID0003", "1.2.826.0.1.3680043.8.498.103", "SPS3", _day(0),
             station="ELSEWHERE"),
        Item("Other^Modality", "PID0004", "1.2.826.0.1.3680043.8.498.104", "SPS4", _day(0),
             modality="OT"),
        Item("Last^Week", "PID0005", "1.2.826.0.1.3680043.8.498.105", "SPS5", _day(-7)),
        Item("No^Study", "PID0006", "", "SPS6", _day(0)),
    ]  # fmt: skip


def _settings(server: WorklistServer, **extra: object) -> WorklistSettings:
    return WorklistSettings.model_validate(
        {
            "ae_title": server.ae_title,
            "host": "127.0.0.1",
            "port": server.port,
            "modality": "XC",
            "timeout": 10,
            **extra,
        }
    )


@pytest.mark.parametrize("scp", ["orthanc_mwl", "wlmscpfs_mwl"])
async def test_both_servers_give_our_items_with_names_decoded(
    scp: str, request: pytest.FixtureRequest
) -> None:
    server: WorklistServer = request.getfixturevalue(scp)
    write_items(server.folder, _items())

    answer = await fetch_worklist(_settings(server), "DERMGATE", today=TODAY, now=1000.0)

    found = {e.patient.patient_id: e for e in answer.entries}
    assert sorted(found) == ["PID0001", "PID0002"]
    jurgen, zoe = found["PID0001"], found["PID0002"]
    assert jurgen.patient.patient_name == "Müller^Jürgen"  # ISO_IR 100
    assert zoe.patient.patient_name == "Łukasiewicz^Zoë"  # ISO_IR 192 (UTF-8)
    assert jurgen.key == "1.2.826.0.1.3680043.8.498.101/SPS1"
    assert jurgen.study_uid == "1.2.826.0.1.3680043.8.498.101"
    assert (jurgen.accession_number, jurgen.patient.birth_date, jurgen.patient.sex) == (
        "ACC1",
        "19700102",
        "M",
    )
    assert (jurgen.sps_start_date, jurgen.sps_start_time) == (_day(0), "0930")
    assert (jurgen.modality, jurgen.station_ae_title) == ("XC", "DERMGATE")
    assert jurgen.requested_procedure_id == "RP1"
    assert jurgen.fetched_at == 1000.0
    assert not answer.truncated
    # Orthanc returns the item without a Study Instance UID (skipped here, by
    # count); wlmscpfs already ignores such an "incomplete" file.
    assert answer.skipped == ("1 without Study Instance UID" if scp == "orthanc_mwl" else "")


@pytest.mark.parametrize("scp", ["orthanc_mwl", "wlmscpfs_mwl"])
async def test_any_station_and_modality_when_not_filtered(
    scp: str, request: pytest.FixtureRequest
) -> None:
    server: WorklistServer = request.getfixturevalue(scp)
    write_items(server.folder, _items())

    answer = await fetch_worklist(
        _settings(server, station_ae_title="", modality="", window_days=0),
        "DERMGATE",
        today=TODAY,
    )

    assert sorted(e.patient.patient_id for e in answer.entries) == [
        "PID0001",
        "PID0003",
        "PID0004",
    ]


async def test_over_returned_items_are_filtered_on_the_box() -> None:
    """A server that ignores every key (answers all it has) still fills the cache
    only with this station's items for the window."""
    scp = FloodingWorklist(_items())
    scp.start()
    try:
        answer = await fetch_worklist(_settings(scp.toml_server()), "DERMGATE", today=TODAY)
    finally:
        scp.stop()
    assert sorted(e.patient.patient_id for e in answer.entries) == ["PID0001", "PID0002"]
    assert answer.received == 6
    assert answer.filtered == 3
    # The query it got: SPS keys inside the single SPS item, no Query/Retrieve Level.
    query = scp.queries[0]
    assert "QueryRetrieveLevel" not in query
    assert "ScheduledProcedureStepStartDate" not in query
    (sps,) = query.ScheduledProcedureStepSequence
    assert sps.ScheduledStationAETitle == "DERMGATE"
    assert sps.Modality == "XC"
    assert sps.ScheduledProcedureStepStartDate == f"{_day(-1)}-{_day(1)}"
    assert sps.ScheduledProcedureStepStartTime == ""  # a return key, never matched
    assert "SpecificCharacterSet" in query


async def test_more_than_max_items_is_cancelled_and_marked_truncated() -> None:
    many = [
        Item(f"Pat^{n}", f"P{n:04}", f"1.2.826.0.1.3680043.8.498.9{n}", f"S{n}", _day(0))
        for n in range(60)
    ]
    scp = FloodingWorklist(many)
    scp.start()
    try:
        answer = await fetch_worklist(
            _settings(scp.toml_server(), max_items=5), "DERMGATE", today=TODAY
        )
        assert scp.cancelled.wait(5)  # the SCP saw the C-CANCEL
    finally:
        scp.stop()
    assert answer.truncated
    assert len(answer.entries) == 5
    assert scp.sent < 60


async def test_failure_status_is_a_typed_error_and_no_partial_worklist() -> None:
    scp = FloodingWorklist(_items(), final_status=0xA700)
    scp.start()
    try:
        with pytest.raises(WorklistError) as caught:
            await fetch_worklist(_settings(scp.toml_server()), "DERMGATE", today=TODAY)
    finally:
        scp.stop()
    assert caught.value.reason is WorklistFailure.FAILED
    assert str(caught.value) == (
        f"C-FIND failed: FLOOD@127.0.0.1:{scp.port} answered the C-FIND with status 0xA700"
    )


async def test_demo_worklist_written_with_pydicom_is_served_by_orthanc(tmp_path: Path) -> None:
    """The demo writes its ``.wl`` files with pydicom (no dump2dcm on a user's box):
    Orthanc's sample plugin serves them, and the demo's [worklist] finds both."""
    folder = tmp_path / "worklists"
    write_demo_worklist(folder, TODAY, station="DERMGATE", modality="XC")
    server = OrthancProcess(
        tmp_path / "orthanc",
        aet="DEMOPACS",
        plugins=(WORKLIST_PLUGIN,),
        extra=orthanc_worklist_settings(folder),
    )
    server.start()
    try:
        answer = await fetch_worklist(
            _settings(WorklistServer("demo", "DEMOPACS", server.dicom_port, folder)),
            "DERMGATE",
            today=TODAY,
        )
    finally:
        server.stop()
    patients = demo_patients()
    assert [(e.patient.patient_name, e.patient.patient_id) for e in answer.entries] == [
        (p.name, p.patient_id) for p in patients
    ]
    assert all(e.patient.issuer_of_patient_id == "DERMGATE-DEMO" for e in answer.entries)
    assert len({e.study_uid for e in answer.entries}) == 2
