"""Real pynetdicom peers that misbehave on purpose, and the `orthanc` and `pacs` fixtures."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    DermoscopicPhotographyImageStorage,
    StorageCommitmentPushModel,
    Verification,
)

from gateway.demo.local_orthanc import OrthancProcess, free_port
from tests.support.gateway_process import GATEWAY_AE

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


@dataclass
class MisbehavingPacs:
    """A pynetdicom storage SCP whose answers are scripted per C-STORE."""

    script: list[Any]
    port: int = field(default_factory=free_port)
    received: list[str] = field(default_factory=list)
    server: Any = None
    # Storage commitment: what to do per N-ACTION ("commit", "fail", "silent",
    # "unknown-then-commit", "hold": accept and keep the report until
    # :meth:`release_held`, "refuse": answer the N-ACTION with 0x0110), where to
    # report (and from which local address), and what happened.
    commit_script: list[str] = field(default_factory=list)
    report_to: int | None = None
    report_from: str | None = None
    actions: list[str] = field(default_factory=list)
    requested: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    held: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)
    report_statuses: list[int] = field(default_factory=list)
    #: Every data set stored (with its file meta), when ``keep_datasets`` is set.
    keep_datasets: bool = False
    stored: list[Dataset] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)

    def handle_action(self, event: Any) -> Any:
        info = event.action_information
        txn = str(info.TransactionUID)
        refs = [
            (str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID))
            for i in info.ReferencedSOPSequence
        ]
        self.actions.append(txn)
        self.requested[txn] = refs
        plan = self.commit_script.pop(0) if self.commit_script else "commit"
        if plan == "refuse":
            return 0x0110, None
        if plan == "hold":
            self.held.append((txn, refs))
        elif plan != "silent":
            self._start_report(plan, txn, refs)
        return 0x0000, None

    def release_held(self) -> None:
        """Send the reports kept back by "hold" (committing everything they name)."""
        while self.held:
            txn, refs = self.held.pop(0)
            self._start_report("commit", txn, refs)

    def _start_report(self, plan: str, txn: str, refs: list[tuple[str, str]]) -> None:
        worker = threading.Thread(target=self._report, args=(plan, txn, refs), daemon=True)
        self._threads.append(worker)
        worker.start()

    def _report(self, plan: str, txn: str, refs: list[tuple[str, str]]) -> None:
        assert self.report_to is not None
        ae = AE(ae_title="MISBEHAVE")
        ae.add_requested_context(StorageCommitmentPushModel)
        role = build_role(StorageCommitmentPushModel, scp_role=True)
        reports = []
        if plan == "unknown-then-commit":
            reports.append(("2.25.424242", refs, "commit"))
            plan = "commit"
        reports.append((txn, refs, plan))
        bind = None if self.report_from is None else (self.report_from, 0)
        for uid, items, kind in reports:
            assoc = ae.associate(
                "127.0.0.1", self.report_to, ae_title="DERMGATE", ext_neg=[role], bind_address=bind
            )
            assert assoc.is_established, "the gateway's listener accepts the report association"
            report = Dataset()
            report.TransactionUID = uid
            seq = []
            for sop_class, sop_instance in items:
                item = Dataset()
                item.ReferencedSOPClassUID = sop_class
                item.ReferencedSOPInstanceUID = sop_instance
                if kind == "fail":
                    item.FailureReason = 0x0112
                seq.append(item)
            if kind == "fail":
                report.FailedSOPSequence = seq
            else:
                report.ReferencedSOPSequence = seq
            status, _ = assoc.send_n_event_report(
                report,
                2 if kind == "fail" else 1,
                StorageCommitmentPushModel,
                "1.2.840.10008.1.20.1.1",
            )
            self.report_statuses.append(int(status.Status) if status else -1)
            assoc.release()

    def handle_store(self, event: Any) -> Any:
        action = self.script.pop(0) if self.script else 0x0000
        if action == "abort":
            event.assoc.abort()
            return 0x0000
        if action == "silence":
            threading.Event().wait(4)
            return 0x0000
        if action in (0x0000, 0xB000):
            self.received.append(str(event.request.AffectedSOPInstanceUID))
            if self.keep_datasets:
                ds = event.dataset
                ds.file_meta = event.file_meta
                self.stored.append(ds)
        return action

    def start(
        self,
        *,
        accept_dermoscopy: bool = True,
        echo: bool = True,
        only: list[tuple[str, str]] | None = None,
    ) -> None:
        """Serve; ``only``: accept exactly these (SOP class, transfer syntax) storage
        contexts instead of Dermoscopic Photography in JPEG Baseline."""
        ae = AE(ae_title="MISBEHAVE")
        if only is not None:
            for sop_class, syntax in only:
                ae.add_supported_context(sop_class, syntax)
        elif accept_dermoscopy:
            ae.add_supported_context(DermoscopicPhotographyImageStorage, JPEG_BASELINE)
        else:
            ae.add_supported_context("1.2.840.10008.5.1.4.1.1.7", JPEG_BASELINE)
        ae.add_supported_context(StorageCommitmentPushModel)
        if echo:
            ae.add_supported_context(Verification)
        self.server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[
                (evt.EVT_C_STORE, self.handle_store),
                (evt.EVT_N_ACTION, self.handle_action),
            ],
        )

    def reject_associations(self, reject: bool) -> None:
        """Reject (or accept again) every association request from now on."""
        assert self.server is not None
        self.server.ae.require_calling_aet = ["NOT-YOU"] if reject else []

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
        for worker in self._threads:
            worker.join(10)


def send_report(
    port: int,
    transaction_uid: str,
    committed: list[tuple[str, str]],
    *,
    calling_ae: str = "MISBEHAVE",
    source: str = "127.0.0.1",
) -> int:
    """Send one commitment N-EVENT-REPORT (event type 1) to the gateway's listener,
    as any AE title from any local address; return the status it answered (-1: none)."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(StorageCommitmentPushModel)
    role = build_role(StorageCommitmentPushModel, scp_role=True)
    assoc = ae.associate(
        "127.0.0.1", port, ae_title="DERMGATE", ext_neg=[role], bind_address=(source, 0)
    )
    assert assoc.is_established, "the listener accepts the association (it is the report it judges)"
    try:
        report = Dataset()
        report.TransactionUID = transaction_uid
        items = []
        for sop_class, sop_instance in committed:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop_instance
            items.append(item)
        report.ReferencedSOPSequence = items
        status, _ = assoc.send_n_event_report(
            report, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1"
        )
        return int(status.Status) if status and "Status" in status else -1
    finally:
        assoc.release()


class HeldAssociations:
    """Associations opened to a listener and kept open (a C-ECHO every few seconds
    keeps them from idling out), as a peer that takes every slot would."""

    def __init__(self, port: int, *, source: str = "127.0.0.1") -> None:
        self.port = port
        self.source = source
        self.assocs: list[Any] = []
        self._stop = threading.Event()
        self._keeper = threading.Thread(target=self._keep, daemon=True)
        self._lock = threading.Lock()
        self._keeper.start()

    def open_one(self) -> bool:
        """Open one more association (C-ECHO); False if the listener would not take it."""
        ae = AE(ae_title="HOLDER")
        ae.add_requested_context(Verification)
        ae.acse_timeout = 15
        ae.network_timeout = 15
        assoc = ae.associate(
            "127.0.0.1", self.port, ae_title="DERMGATE", bind_address=(self.source, 0)
        )
        if not assoc.is_established:
            return False
        with self._lock:
            self.assocs.append(assoc)
        return True

    def fill(self, most: int = 16) -> int:
        """Open associations until the listener refuses one; return how many are held."""
        for _ in range(most):
            if not self.open_one():
                break
        return len(self.assocs)

    def _keep(self) -> None:
        while not self._stop.wait(5):
            with self._lock:
                held = list(self.assocs)
            for assoc in held:
                if assoc.is_established:
                    assoc.send_c_echo()

    def release(self) -> None:
        """Release every held association."""
        self._stop.set()
        self._keeper.join(30)
        for assoc in self.assocs:
            if assoc.is_established:
                assoc.release()
        self.assocs.clear()


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancProcess]:
    """A private Orthanc that knows the gateway's commitment listener."""
    listen_port = free_port()
    server = OrthancProcess(
        tmp_path / "orthanc", modalities={"dermgate": (GATEWAY_AE, "127.0.0.1", listen_port)}
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pacs() -> Iterator[MisbehavingPacs]:
    """A scriptable pynetdicom PACS; its commitment reports go to ``report_to``."""
    server = MisbehavingPacs(script=[], report_to=free_port())
    yield server
    server.stop()


@pytest.fixture
def shipped_orthanc(tmp_path: Path) -> Iterator[OrthancProcess]:
    """A private Orthanc as Debian ships it in one respect: ``UnknownSopClassAccepted``
    false, so it refuses the confocal classes (no presentation context accepted)."""
    listen_port = free_port()
    server = OrthancProcess(
        tmp_path / "orthanc",
        modalities={"dermgate": (GATEWAY_AE, "127.0.0.1", listen_port)},
        extra={"UnknownSopClassAccepted": False},
    )
    server.start()
    yield server
    server.stop()
