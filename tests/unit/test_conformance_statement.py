"""The Conformance Statement lists exactly the presentation contexts the code uses.

``docs/conformance-statement.md`` marks each presentation-context table with an
HTML comment (``<!-- contexts: NAME -->``); each row is ``SOP class | UID |
transfer syntaxes | role``. A PACS administrator configures the PACS from those
tables, so a SOP class or transfer syntax the box sends but the statement does not
list (or one it lists but never sends) is a real fault: these tests compare every
table with the names the code negotiates with, and scan the code for presentation
contexts and SOP classes nobody told the statement about.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom.uid
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, evt

from gateway.context import mpps_send, worklist_fetch
from gateway.core.config import DicomDestination
from gateway.core.config.context import WorklistSettings
from gateway.core.uids import (
    DERMGATE_IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    new_uid,
)
from gateway.demo.local_orthanc import free_port
from gateway.dicom.writers import write_capture
from gateway.forward import commitment, cstore
from gateway.forward.contexts import (
    DEFAULT_SYNTAXES,
    MPPS,
    STORAGE_COMMITMENT_PUSH,
    STORAGE_CONTEXTS,
    VERIFICATION,
    WORKLIST_FIND,
    storage_contexts,
)
from gateway.forward.cstore import StoreRequest
from tests.support.capture_contexts import KINDS, base_job

ROOT = Path(__file__).resolve().parents[2]
STATEMENT = ROOT / "docs" / "conformance-statement.md"
_UID = re.compile(r"`(\d+(?:\.\d+)+)`")
_MARK = re.compile(r"<!-- contexts: ([a-z-]+) -->")

Row = tuple[str, str, frozenset[str], str]


def _tables() -> dict[str, list[Row]]:
    """Each marked table: rows of (name, SOP class UID, transfer syntax UIDs, role)."""
    tables: dict[str, list[Row]] = {}
    lines = STATEMENT.read_text(encoding="utf-8").splitlines()
    for at, line in enumerate(lines):
        mark = _MARK.search(line)
        if mark is None:
            continue
        rows: list[Row] = []
        body = lines[at + 1 :]
        while body and not body[0].startswith("|"):
            body.pop(0)
        for row in body[2:]:  # header, separator
            if not row.startswith("|"):
                break
            cells = [c.strip() for c in row.strip("|").split("|")]
            assert len(cells) == 4, f"table {mark.group(1)}: 4 cells expected in {row!r}"
            name, uid_cell, syntax_cell, role = cells
            uids = _UID.findall(uid_cell)
            assert len(uids) == 1, f"one SOP class UID per row: {row!r}"
            rows.append((name, uids[0], frozenset(_UID.findall(syntax_cell)), role))
        assert mark.group(1) not in tables, f"table {mark.group(1)} marked twice"
        tables[mark.group(1)] = rows
    return tables


def _contexts(rows: list[Row]) -> dict[str, frozenset[str]]:
    found: dict[str, frozenset[str]] = {}
    for _name, uid, syntaxes, _role in rows:
        assert uid not in found, f"{uid} listed twice in one table"
        found[uid] = syntaxes
    return found


@pytest.fixture(scope="module")
def tables() -> dict[str, list[Row]]:
    return _tables()


DEFAULTS = frozenset(DEFAULT_SYNTAXES)


def test_storage_table_is_exactly_what_the_forwarder_can_propose(
    tables: dict[str, list[Row]],
) -> None:
    documented = _contexts(tables["storage"])
    assert documented == {k: frozenset(v) for k, v in STORAGE_CONTEXTS.items()}
    assert {role for *_, role in tables["storage"]} == {"SCU"}


def test_every_documented_name_is_the_standard_name_of_its_uid(
    tables: dict[str, list[Row]],
) -> None:
    """A PACS administrator reads the names: a name that is not its UID's misleads."""
    for rows in tables.values():
        for name, uid, _syntaxes, _role in rows:
            assert name == UID(uid).name, f"{uid} is {UID(uid).name!r}, not {name!r}"


def test_non_storage_tables_name_the_constants_the_code_negotiates_with(
    tables: dict[str, list[Row]],
) -> None:
    # The code's own names, compared with the constants the statement is held to.
    assert str(cstore.Verification) == VERIFICATION
    assert str(commitment.StorageCommitmentPushModel) == STORAGE_COMMITMENT_PUSH
    assert str(commitment.Verification) == VERIFICATION
    assert str(worklist_fetch.ModalityWorklistInformationFind) == WORKLIST_FIND
    assert mpps_send.MPPS_SOP_CLASS == MPPS
    assert str(mpps_send.Verification) == VERIFICATION

    assert _contexts(tables["verification"]) == {VERIFICATION: DEFAULTS}
    assert _contexts(tables["commitment"]) == {STORAGE_COMMITMENT_PUSH: DEFAULTS}
    assert _contexts(tables["worklist"]) == {WORKLIST_FIND: DEFAULTS}
    assert _contexts(tables["mpps"]) == {MPPS: DEFAULTS, VERIFICATION: DEFAULTS}
    assert _contexts(tables["listener"]) == {
        STORAGE_COMMITMENT_PUSH: DEFAULTS,
        VERIFICATION: DEFAULTS,
    }
    roles = {uid: role for _n, uid, _s, role in tables["listener"]}
    assert roles == {STORAGE_COMMITMENT_PUSH: "SCU", VERIFICATION: "SCP"}
    for name in ("verification", "commitment", "worklist", "mpps"):
        assert {role for *_, role in tables[name]} == {"SCU"}, name
    assert set(tables) == {
        "storage",
        "verification",
        "commitment",
        "worklist",
        "mpps",
        "listener",
    }


def test_one_context_per_pair_of_a_batch_with_the_files_own_syntax() -> None:
    dermoscopy, photo = "1.2.840.10008.5.1.4.1.1.77.1.7", "1.2.840.10008.5.1.4.1.1.77.1.4"
    jpeg, native = "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.1"
    batch = [(photo, jpeg), (dermoscopy, jpeg), (photo, native), (photo, jpeg)]
    assert storage_contexts(batch) == sorted({(dermoscopy, jpeg), (photo, jpeg), (photo, native)})


# What the first argument of every add_requested_context / add_supported_context
# call in gateway/ stands for. A call with any other argument fails the test below:
# document its SOP class in the statement, then add it here and to the tables test.
_CONTEXT_ARGUMENTS = {
    "Verification": VERIFICATION,
    "VERIFICATION": VERIFICATION,  # gateway.forward.contexts.VERIFICATION
    '"1.2.840.10008.1.1"': VERIFICATION,
    "StorageCommitmentPushModel": STORAGE_COMMITMENT_PUSH,
    "ModalityWorklistInformationFind": WORKLIST_FIND,
    "MPPS_SOP_CLASS": MPPS,
    "sop_class": "storage: one per pair, gateway.forward.contexts.storage_contexts",
}
_CONTEXT_CALL = re.compile(r"add_(?:requested|supported)_context\(\s*([^,)\s]+)")


def test_no_presentation_context_in_the_code_that_the_statement_does_not_know() -> None:
    unknown = []
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        for argument in _CONTEXT_CALL.findall(path.read_text(encoding="utf-8")):
            if argument not in _CONTEXT_ARGUMENTS:
                unknown.append(f"{path.relative_to(ROOT)}: {argument}")
    assert not unknown, "presentation contexts not in docs/conformance-statement.md: " + str(
        unknown
    )


_STORAGE_LITERAL = re.compile(r'"(1\.2\.840\.10008\.5\.1\.4\.1\.1\.\d+(?:\.\d+)*)"')
_SYNTAX_LITERAL = re.compile(r'"(1\.2\.840\.10008\.1\.2(?:\.\d+)*)"')
_NAME = re.compile(r"\b[A-Z][A-Za-z0-9]+\b")


def _uids_named_in(source: str) -> set[str]:
    """UIDs in ``source``: quoted literals and pydicom.uid's names for them."""
    found = set(_STORAGE_LITERAL.findall(source)) | set(_SYNTAX_LITERAL.findall(source))
    for name in _NAME.findall(source):
        value = getattr(pydicom.uid, name, None)
        if isinstance(value, UID) and value.is_valid:
            found.add(str(value))
    return found


def test_every_storage_class_and_syntax_the_writers_name_is_documented(
    tables: dict[str, list[Row]],
) -> None:
    """A new IOD or transfer syntax in gateway/dicom needs its row in the statement.

    gateway/dicom/mpps.py is left out: it names SOP classes only to sort an MPPS's
    references (images or not) and never writes them.
    """
    documented = _contexts(tables["storage"])
    syntaxes = frozenset().union(*documented.values())
    named: set[str] = set()
    for path in sorted((ROOT / "gateway" / "dicom").glob("*.py")):
        if path.name != "mpps.py":
            named |= _uids_named_in(path.read_text(encoding="utf-8"))
    storage = {u for u in named if UID(u).keyword.endswith("Storage")}
    transfer = {u for u in named if UID(u).is_transfer_syntax}
    assert storage, "the scan found no SOP class: the pattern is broken"
    assert storage <= set(documented), sorted(storage - set(documented))
    assert transfer <= syntaxes, sorted(transfer - syntaxes)


def test_implementation_identity_is_the_one_the_statement_gives() -> None:
    text = STATEMENT.read_text(encoding="utf-8")
    assert f"`{DERMGATE_IMPLEMENTATION_CLASS_UID}`" in text
    assert f"`{IMPLEMENTATION_VERSION_NAME}`" in text
    # The associations carry the same identity (seen by a real peer, below), not
    # pynetdicom's.
    assert f"`{AE().implementation_class_uid}`" not in text


# --- the contexts as the code really proposes them, seen by a real pynetdicom peer ---


class RecordingPeer:
    """A pynetdicom SCP that accepts every documented context and records, per
    association, the presentation contexts proposed: [(abstract syntax, syntaxes)]."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proposed: list[list[tuple[str, tuple[str, ...]]]] = []
        self.identities: list[tuple[str, str]] = []
        self.stored: list[str] = []
        self._server: Any = None

    def _requested(self, event: Any) -> None:
        requestor = event.assoc.requestor
        self.identities.append(
            (str(requestor.implementation_class_uid), str(requestor.implementation_version_name))
        )
        self.proposed.append(
            [
                (str(cx.abstract_syntax), tuple(str(s) for s in cx.transfer_syntax))
                for cx in event.assoc.requestor.requested_contexts
            ]
        )

    def _store(self, event: Any) -> int:
        self.stored.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    @staticmethod
    def _find(_event: Any) -> Iterator[tuple[int, Any]]:
        yield 0x0000, None

    @staticmethod
    def _create(_event: Any) -> tuple[int, Any]:
        return 0x0000, Dataset()

    def start(self) -> None:
        ae = AE(ae_title="RECORDER")
        for sop_class, syntaxes in STORAGE_CONTEXTS.items():
            ae.add_supported_context(sop_class, list(syntaxes))
        for sop_class in (VERIFICATION, WORKLIST_FIND, MPPS, STORAGE_COMMITMENT_PUSH):
            ae.add_supported_context(sop_class)
        self._server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[
                (evt.EVT_REQUESTED, self._requested),
                (evt.EVT_C_STORE, self._store),
                (evt.EVT_C_FIND, self._find),
                (evt.EVT_N_CREATE, self._create),
            ],
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()


@pytest.fixture
def peer() -> Iterator[RecordingPeer]:
    recorder = RecordingPeer()
    recorder.start()
    yield recorder
    recorder.stop()


def _destination(port: int) -> DicomDestination:
    return DicomDestination(
        name="pacs",
        kind="dicom",
        ae_title="RECORDER",
        host="127.0.0.1",
        port=port,
        connect_timeout=5,
        acse_timeout=5,
        dimse_timeout=10,
        network_timeout=10,
    )


def test_a_batch_of_every_kind_proposes_exactly_the_documented_contexts(
    tmp_path: Path, peer: RecordingPeer, tables: dict[str, list[Row]]
) -> None:
    """Objects written by DermGate's own writers, sent by its C-STORE sender: the
    association proposes one context per (class, syntax) pair, each in the table."""
    documented = _contexts(tables["storage"])
    batch = []
    for spool_id, kind in enumerate(KINDS):
        dest = tmp_path / kind / "out.dcm"
        written = write_capture(base_job(kind, tmp_path / kind), dest)
        batch.append(
            StoreRequest(spool_id, dest, written.sop_class_uid, written.transfer_syntax_uid)
        )
    outcomes = cstore.CStoreSender("DERMGATE", _destination(peer.port)).send_batch(
        batch, threading.Event()
    )
    assert [o.verdict for o in outcomes] == [cstore.Verdict.SUCCESS] * len(KINDS)
    [proposed] = peer.proposed
    assert peer.identities == [(DERMGATE_IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME)]
    pairs = {(r.sop_class_uid, r.transfer_syntax_uid) for r in batch}
    assert sorted((sop, syntaxes) for sop, syntaxes in proposed) == [
        (sop, (syntax,)) for sop, syntax in sorted(pairs)
    ]
    for sop, (syntax,) in proposed:
        assert syntax in documented[sop], f"{sop} in {syntax} is not in the statement"


def test_echo_worklist_and_mpps_propose_the_documented_contexts(
    peer: RecordingPeer, tables: dict[str, list[Row]]
) -> None:
    assert cstore.CStoreSender("DERMGATE", _destination(peer.port)).echo() is None
    settings = WorklistSettings(ae_title="RECORDER", host="127.0.0.1", port=peer.port)
    answer = asyncio.run(worklist_fetch.fetch_worklist(settings, "DERMGATE"))
    assert answer.entries == []
    sender = mpps_send.StepSender("DERMGATE", "RECORDER", "127.0.0.1", peer.port, 10)
    step = Dataset()
    step.PerformedProcedureStepStatus = "IN PROGRESS"
    outcome = sender.send(new_uid(), step, None)
    assert outcome.created
    assert outcome.error is None

    echo, worklist, mpps = peer.proposed
    assert (
        peer.identities == [(DERMGATE_IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME)] * 3
    ), "every association introduces itself as DermGate"
    for seen, table in ((echo, "verification"), (worklist, "worklist"), (mpps, "mpps")):
        assert {sop: frozenset(s) for sop, s in seen} == _contexts(tables[table]), table
        assert len(seen) == len(tables[table]), f"{table}: one context per SOP class"
