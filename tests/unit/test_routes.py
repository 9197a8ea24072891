"""``[[routes]]``: the configuration a clinic writes, and the deliveries the ledger gets.

The configuration is parsed as ``dermgate run`` parses it; the ledger is a real one,
written by the functions the service uses (wrap, send, confirm, flag, start-up).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.capture import CaptureOffer, DeviceClass, InstanceUIDs
from gateway.core.config import ConfigError, DermGateConfig
from gateway.core.routing import CaptureFacts, RoutePlan
from gateway.core.uids import new_uid
from gateway.service.config import parse_config
from gateway.spool import admin
from gateway.spool import commitments as cdb
from gateway.spool import ledger as db
from gateway.spool.capture_marks import flag_sensitive
from gateway.spool.dirs import SpoolDirs
from gateway.spool.routing import (
    NO_ROUTE_REASON,
    DestinationConfigured,
    forget_destination,
    removed_destinations,
)
from tests.support.dicom_files import DEVICE

DERMOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.7"
CONFOCAL = "1.2.840.10008.5.1.4.1.1.77.1.9"  # VL Whole Slide Microscopy (tiled confocal)
CONFOCAL_DEVICE = dataclasses.replace(DEVICE, device_class=DeviceClass.CONFOCAL_MICROSCOPE)

_BASE = """
[[destinations]]
name = "pacs"
kind = "dicom"
ae_title = "PACS"
host = "127.0.0.1"
port = 104

[[destinations]]
name = "research"
kind = "dicom"
ae_title = "RESEARCH"
host = "127.0.0.1"
port = 105

[[devices]]
name = "derm-1"
driver = "serial-dermatoscope"
port = "/dev/ttyACM0"
"""

# What the issue asks for: dermoscopy to both, confocal to the PACS only, sensitive
# captures never to research, and the urgent device's captures first.
CLINIC = (
    _BASE
    + """
[[routes]]
match = { device_class = "dermatoscope", sensitive = false }
to = ["pacs", "research"]

[[routes]]
match = { device_class = ["dermatoscope", "confocal-microscope"] }
to = "pacs"

[[routes]]
match = { device = "derm-1", sop_class = "Dermoscopic Photography Image Storage" }
to = ["pacs"]
priority = "high"
"""
)


def _config(tmp_path: Path, text: str) -> DermGateConfig:
    return parse_config(text, tmp_path / "dermgate.toml")


def _problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        _config(tmp_path, text)
    return err.value.problems


def _facts(**given: object) -> CaptureFacts:
    facts = {
        "device_class": "dermatoscope",
        "driver": "serial-dermatoscope",
        "device": "derm-1",
        "sop_class_uid": DERMOSCOPIC,
        "sensitive": False,
    }
    facts.update(given)
    return CaptureFacts(**facts)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- config


def test_a_capture_goes_to_every_route_it_matches_with_the_highest_priority(
    tmp_path: Path,
) -> None:
    plan = RoutePlan.from_config(_config(tmp_path, CLINIC))
    assert plan.targets(_facts()) == {"pacs": 1, "research": 0}
    assert plan.targets(_facts(device="derm-2")) == {"pacs": 0, "research": 0}
    assert plan.targets(_facts(sensitive=True)) == {"pacs": 1}
    assert plan.targets(_facts(device_class="confocal-microscope", sop_class_uid=CONFOCAL)) == {
        "pacs": 0
    }
    assert plan.targets(_facts(device_class="body-scanner", device="scanner-1")) == {}


def test_no_routes_send_every_capture_everywhere_and_an_empty_match_matches_all(
    tmp_path: Path,
) -> None:
    plain = RoutePlan.from_config(_config(tmp_path, _BASE))
    assert plain.targets(_facts(device_class="camera")) == {"pacs": 0, "research": 0}
    catch_all = RoutePlan.from_config(_config(tmp_path, _BASE + '[[routes]]\nto = ["research"]\n'))
    assert catch_all.targets(_facts(device_class="camera", sensitive=True)) == {"research": 0}


def test_sop_classes_are_named_by_uid_keyword_or_name(tmp_path: Path) -> None:
    for given in (
        DERMOSCOPIC,
        "DermoscopicPhotographyImageStorage",
        "dermoscopic photography image storage",
    ):
        text = _BASE + f'[[routes]]\nmatch = {{ sop_class = "{given}" }}\nto = ["pacs"]\n'
        assert _config(tmp_path, text).routes[0].match.sop_class == [DERMOSCOPIC]


def test_config_errors_name_the_route_and_what_exists(tmp_path: Path) -> None:
    path = tmp_path / "dermgate.toml"
    wrong_to = _BASE + '[[routes]]\nto = ["pacs", "archive"]\n'
    assert _problems(tmp_path, wrong_to) == [
        f"{path}: (top level): routes[0].to: 'archive' names no [[destinations]] entry "
        "(their names: pacs, research)"
    ]
    wrong_device = _BASE + '[[routes]]\nmatch = { device = "derm-9" }\nto = ["pacs"]\n'
    assert (
        "routes[0].match.device: 'derm-9' names no [[devices]] entry (their names: derm-1)"
        in (_problems(tmp_path, wrong_device)[0])
    )
    wrong_class = _BASE + '[[routes]]\nmatch = { sop_class = "Dermoscopy" }\nto = ["pacs"]\n'
    problem = _problems(tmp_path, wrong_class)[0]
    assert problem.startswith(f"{path}: routes[0].match.sop_class")
    assert "'Dermoscopy' is neither a UID nor a SOP class name" in problem
    for bad in (
        "to = []\n",
        'to = ["pacs"]\npriority = "urgent"\n',
        'to = ["pacs"]\nmatch = { colour = "red" }\n',
    ):
        assert _problems(tmp_path, _BASE + "[[routes]]\n" + bad)
    wrong_class_kind = _BASE + '[[routes]]\nmatch = { device_class = "scanner" }\nto = ["pacs"]\n'
    assert "device_class" in _problems(tmp_path, wrong_class_kind)[0]


# --------------------------------------------------------------------------- ledger


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = db.open_ledger(tmp_path / "ledger.sqlite3")
    yield connection
    connection.close()


def _wrapped(
    conn: sqlite3.Connection,
    plan: RoutePlan,
    *,
    sop_class: str = DERMOSCOPIC,
    confocal: bool = False,
    sensitive: bool = False,
    device_name: str = "derm-1",
) -> int:
    uids = InstanceUIDs(new_uid(), new_uid(), new_uid())
    spool_id = db.insert_capture(
        conn,
        driver="serial-dermatoscope",
        device=CONFOCAL_DEVICE if confocal else DEVICE,
        offer=CaptureOffer(uids.sop_instance[-12:]),
        uids=uids,
        raw_name=f"{uids.sop_instance}.raw",
        raw_size=3,
        raw_sha256="0" * 64,
        device_name=device_name,
    )
    if sensitive:
        conn.execute("UPDATE captures SET sensitive = 1 WHERE id = ?", (spool_id,))
        conn.commit()
    db.mark_wrapped(
        conn,
        spool_id,
        dicom_name=f"{uids.sop_instance}.dcm",
        sop_class_uid=sop_class,
        transfer_syntax_uid="1.2.840.10008.1.2.4.50",
        destinations=plan,
        now=0.0,
    )
    return spool_id


def _deliveries(conn: sqlite3.Connection, spool_id: int) -> dict[str, tuple[str, int]]:
    rows = conn.execute(
        "SELECT destination, state, priority FROM deliveries WHERE capture_id = ?", (spool_id,)
    )
    return {str(r[0]): (str(r[1]), int(r[2])) for r in rows}


def _state(conn: sqlite3.Connection, spool_id: int) -> tuple[str, str | None]:
    row = conn.execute("SELECT state, reason FROM captures WHERE id = ?", (spool_id,)).fetchone()
    return str(row[0]), row[1]


def _commit(conn: sqlite3.Connection, spool_id: int, destination: str) -> None:
    db.record_sent(conn, spool_id, destination, now=1.0)
    conn.execute(
        "UPDATE deliveries SET sent_epoch = 0 WHERE capture_id = ? AND destination = ?",
        (spool_id, destination),
    )
    cdb.confirm_by_retention(conn, destination, 5.0)


def test_wrapping_creates_only_the_routed_deliveries_and_committed_waits_for_all(
    tmp_path: Path, conn: sqlite3.Connection
) -> None:
    plan = RoutePlan.from_config(_config(tmp_path, CLINIC))
    derm = _wrapped(conn, plan)
    confocal = _wrapped(conn, plan, sop_class=CONFOCAL, confocal=True)
    assert _deliveries(conn, derm) == {"pacs": ("PENDING", 1), "research": ("PENDING", 0)}
    assert _deliveries(conn, confocal) == {"pacs": ("PENDING", 0)}
    _commit(conn, derm, "pacs")
    _commit(conn, confocal, "pacs")
    assert _state(conn, confocal)[0] == "COMMITTED"
    assert _state(conn, derm)[0] == "WRAPPED"  # research has not confirmed yet: not purgeable
    _commit(conn, derm, "research")
    assert _state(conn, derm)[0] == "COMMITTED"


def test_high_priority_is_due_first(tmp_path: Path, conn: sqlite3.Connection) -> None:
    plan = RoutePlan.from_config(_config(tmp_path, CLINIC))
    backlog = [_wrapped(conn, plan, device_name="derm-2") for _ in range(3)]
    urgent = _wrapped(conn, plan)
    later = _wrapped(conn, plan, device_name="derm-2")
    due = [d.spool_id for d in db.due_deliveries(conn, "pacs", 10.0, 10)]
    assert due == [urgent, later, *reversed(backlog)]


def test_a_capture_no_route_matches_is_set_aside_and_released_by_a_new_route(
    tmp_path: Path, conn: sqlite3.Connection
) -> None:
    plan = RoutePlan.from_config(_config(tmp_path, CLINIC))
    camera = _wrapped(conn, plan, sop_class="1.2.840.10008.5.1.4.1.1.77.1.4")
    conn.execute(
        "UPDATE captures SET device_json = json_set(device_json, '$.device_class', 'camera') "
        "WHERE id = ?",
        (camera,),
    )
    conn.commit()
    db.reroute(conn, plan, 1.0, [camera])
    state, reason = _state(conn, camera)
    assert state == "QUARANTINED"
    assert reason is not None
    assert reason.startswith(NO_ROUTE_REASON)
    assert "device class camera" in reason
    assert "add a route" in reason
    assert _deliveries(conn, camera) == {}
    wider = RoutePlan.from_config(
        _config(tmp_path, CLINIC + '[[routes]]\nmatch = { device_class = "camera" }\nto = "pacs"\n')
    )
    changes = db.reroute(conn, wider, 2.0)
    assert changes.released == [camera]
    assert _state(conn, camera) == ("WRAPPED", None)
    assert _deliveries(conn, camera) == {"pacs": ("PENDING", 0)}


def test_a_retry_routes_a_capture_set_aside_for_want_of_a_route(
    tmp_path: Path, conn: sqlite3.Connection
) -> None:
    only_confocal = RoutePlan.from_config(
        _config(
            tmp_path, _BASE + f'[[routes]]\nmatch = {{ sop_class = "{CONFOCAL}" }}\nto = "pacs"\n'
        )
    )
    spool_id = _wrapped(conn, only_confocal)
    assert _state(conn, spool_id)[0] == "QUARANTINED"
    dirs = SpoolDirs(tmp_path / "spool")
    dirs.create()
    name = conn.execute("SELECT dicom_name FROM captures WHERE id = ?", (spool_id,)).fetchone()[0]
    (dirs.dicom / name).write_bytes(b"DICM")  # written at intake: no raw file to wrap again
    outcome = admin.retry_capture(conn, dirs, spool_id, only_confocal)
    assert outcome.state == "QUARANTINED"  # still no route: set aside again, with the reason
    assert _state(conn, spool_id)[1].startswith(NO_ROUTE_REASON)  # type: ignore[union-attr]
    everything = RoutePlan.from_config(_config(tmp_path, _BASE))
    outcome = admin.retry_capture(conn, dirs, spool_id, everything)
    assert outcome.state == "WRAPPED"
    assert set(_deliveries(conn, spool_id)) == {"pacs", "research"}


def test_a_destination_added_later_gets_the_captures_still_on_disk(
    tmp_path: Path, conn: sqlite3.Connection
) -> None:
    pacs_only = RoutePlan(("pacs",))
    committed, purged, waiting = (_wrapped(conn, pacs_only) for _ in range(3))
    for spool_id in (committed, purged):
        _commit(conn, spool_id, "pacs")
    conn.execute("UPDATE captures SET state = 'PURGED' WHERE id = ?", (purged,))
    conn.commit()
    plan = RoutePlan.from_config(_config(tmp_path, CLINIC))
    changes = db.reroute(conn, plan, 3.0)
    assert sorted(changes.added) == [(committed, "research"), (waiting, "research")]
    # Confirmed by the PACS but not purged yet: kept until research confirms it too.
    assert _state(conn, committed)[0] == "WRAPPED"
    assert _deliveries(conn, committed) == {
        "pacs": ("COMMITTED", 0),
        "research": ("PENDING", 0),
    }
    assert _deliveries(conn, purged) == {"pacs": ("COMMITTED", 0)}
    assert _deliveries(conn, waiting)["pacs"] == ("PENDING", 1)  # the high route applies now


def test_a_removed_destination_keeps_its_deliveries_and_the_capture(
    tmp_path: Path, conn: sqlite3.Connection
) -> None:
    both = RoutePlan(("pacs", "research"))
    spool_id = _wrapped(conn, both)
    _commit(conn, spool_id, "pacs")
    pacs_only = RoutePlan(("pacs",))
    changes = db.reroute(conn, pacs_only, 1.0)
    assert not changes.withdrawn
    assert _deliveries(conn, spool_id)["research"] == ("PENDING", 0)
    assert _state(conn, spool_id)[0] == "WRAPPED"  # never COMMITTED, never purged
    assert removed_destinations(conn, pacs_only.destinations) == {"research": {"PENDING": 1}}
    assert removed_destinations(conn, both.destinations) == {}


def test_flagging_sensitive_withdraws_what_is_not_sent_and_unflagging_restores_it(
    tmp_path: Path, conn: sqlite3.Connection
) -> None:
    plan = RoutePlan.from_config(_config(tmp_path, CLINIC))
    waiting = _wrapped(conn, plan)
    gone = _wrapped(conn, plan)
    db.record_sent(conn, gone, "research", now=1.0)
    changes = flag_sensitive(conn, waiting, True, plan, 2.0)
    assert changes.withdrawn == [(waiting, "research")]
    assert _deliveries(conn, waiting) == {"pacs": ("PENDING", 1)}
    late = flag_sensitive(conn, gone, True, plan, 2.0)
    assert late.already_sent == [(gone, "research")]  # reported: the box cannot unsend it
    assert _deliveries(conn, gone)["research"][0] == "SENT"
    changes = flag_sensitive(conn, waiting, False, plan, 3.0)
    assert changes.added == [(waiting, "research")]
    assert db.due_deliveries(conn, "research", 4.0, 10)[0].spool_id == waiting


def test_a_capture_flagged_before_wrapping_never_gets_a_research_delivery(
    tmp_path: Path, conn: sqlite3.Connection
) -> None:
    plan = RoutePlan.from_config(_config(tmp_path, CLINIC))
    spool_id = _wrapped(conn, plan, sensitive=True)
    assert _deliveries(conn, spool_id) == {"pacs": ("PENDING", 1)}


def _dicom_file(folder: Path, *, sensitive: bool) -> str:
    """A spooled dermoscopic object as the wrapper leaves it (headers only suffice)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence

    ds = Dataset()
    ds.SOPClassUID = DERMOSCOPIC
    ds.SOPInstanceUID = new_uid()
    ds.StudyInstanceUID = new_uid()
    ds.SeriesInstanceUID = new_uid()
    ds.Manufacturer = "DermGate Reference Devices"
    ds.PatientID = "TMP-box-7"
    ds.IssuerOfPatientID = "box-TEMP"
    if sensitive:
        item = Dataset()
        item.CodeValue = "FLAGGED"
        item.CodingSchemeDesignator = "99DERMGATE"
        item.CodeMeaning = "flagged by a technician"
        ds.add_new(0x0008001D, "SQ", Sequence([item]))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = DERMOSCOPIC
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def test_a_rebuilt_ledger_keeps_flagged_captures_away_from_research(tmp_path: Path) -> None:
    """The sensitive flag is in the file (Sensitive Content Code Sequence): a lost
    ledger does not lose it, so the routes still keep that capture from research."""
    from gateway.spool.rebuild import rebuild_ledger

    dirs = SpoolDirs(tmp_path / "spool")
    dirs.create()
    flagged = _dicom_file(dirs.dicom, sensitive=True)
    plain = _dicom_file(dirs.dicom, sensitive=False)
    plan = RoutePlan.from_config(_config(tmp_path, CLINIC))
    ledger = tmp_path / "ledger.sqlite3"
    rebuild_ledger(ledger, dirs, plan, gateway_id="box", spool_id_mark=tmp_path / "mark")
    conn = db.open_ledger(ledger)
    try:
        ids = {
            str(r[0]): int(r[1]) for r in conn.execute("SELECT sop_instance_uid, id FROM captures")
        }
        assert set(_deliveries(conn, ids[flagged])) == {"pacs"}
        assert set(_deliveries(conn, ids[plain])) == {"pacs", "research"}
    finally:
        conn.close()


def test_forgetting_a_removed_destination_lets_its_captures_complete(
    tmp_path: Path, conn: sqlite3.Connection
) -> None:
    both = RoutePlan(("pacs", "research"))
    done, other = _wrapped(conn, both), _wrapped(conn, both)
    _commit(conn, done, "pacs")
    db.record_sent(conn, done, "research", now=1.0)  # sent, never confirmed
    conn.execute("DELETE FROM deliveries WHERE capture_id = ? AND destination = 'pacs'", (other,))
    conn.commit()
    pacs_only = RoutePlan(("pacs",), RoutePlan.from_config(_config(tmp_path, CLINIC)).routes[1:2])
    with pytest.raises(DestinationConfigured):
        forget_destination(conn, "pacs", pacs_only, 2.0)
    forgotten = forget_destination(conn, "research", pacs_only, 2.0)
    assert forgotten.dropped == {"SENT": 1, "PENDING": 1}
    assert forgotten.spool_ids == [done, other]
    assert _state(conn, done)[0] == "COMMITTED"  # the PACS confirmed it: purgeable now
    # Its routes still send the other one to the PACS: it gets that delivery back.
    assert forgotten.rerouted.added == [(other, "pacs")]
    assert _deliveries(conn, other) == {"pacs": ("PENDING", 0)}
    assert removed_destinations(conn, ["pacs"]) == {}
