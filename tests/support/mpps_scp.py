"""A real pynetdicom MPPS SCP (a RIS) that records what it is told, and its fixture.

It accepts the Modality Performed Procedure Step SOP Class, answers N-CREATE and
N-SET as a RIS does (a step that reached COMPLETED or DISCONTINUED may no longer
be updated: 0x0110), keeps every message received with the status it answered, and
can be started late, stopped and started again on the same port to play an outage.
``refuse_create`` makes it answer every N-CREATE with that status instead.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt

from gateway.demo.local_orthanc import free_port

MPPS = "1.2.840.10008.3.1.2.3.3"
MAY_NO_LONGER_BE_UPDATED = 0x0110
NO_SUCH_INSTANCE = 0x0112
DUPLICATE_INSTANCE = 0x0111


@dataclass(frozen=True)
class Received:
    """One message: "N-CREATE" or "N-SET", the step's UID, the dataset, the answer."""

    message: str
    sop_instance_uid: str
    dataset: Dataset
    status: int
    calling_ae: str


@dataclass
class MppsScp:
    """A pynetdicom MPPS SCP on ``port`` (AE title ``ae_title``)."""

    ae_title: str = "RIS"
    port: int = field(default_factory=free_port)
    refuse_create: int | None = None
    received: list[Received] = field(default_factory=list)
    steps: dict[str, Dataset] = field(default_factory=dict)
    server: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _keep(self, message: str, uid: str, ds: Dataset, status: int, event: Any) -> None:
        calling = str(event.assoc.requestor.ae_title).strip()
        with self._lock:
            self.received.append(Received(message, uid, ds, status, calling))

    def _on_create(self, event: Any) -> tuple[int, Dataset | None]:
        uid = str(event.request.AffectedSOPInstanceUID)
        ds = event.attribute_list
        with self._lock:
            known = uid in self.steps
        if self.refuse_create is not None:
            status = self.refuse_create
        elif known:
            status = DUPLICATE_INSTANCE
        elif ds.get("PerformedProcedureStepStatus") != "IN PROGRESS":
            status = 0x0106  # invalid attribute value
        else:
            status = 0x0000
            with self._lock:
                self.steps[uid] = copy.deepcopy(ds)  # the record keeps what was sent
        self._keep("N-CREATE", uid, ds, status, event)
        return status, ds if status == 0 else None

    def _on_set(self, event: Any) -> tuple[int, Dataset | None]:
        uid = str(event.request.RequestedSOPInstanceUID)
        mods = event.modification_list
        with self._lock:
            step = self.steps.get(uid)
        if step is None:
            status = NO_SUCH_INSTANCE
        elif step.PerformedProcedureStepStatus != "IN PROGRESS":
            status = MAY_NO_LONGER_BE_UPDATED
        else:
            status = 0x0000
            with self._lock:
                for element in mods:
                    step[element.tag] = element
        self._keep("N-SET", uid, mods, status, event)
        return status, None

    def start(self) -> None:
        """Listen (again) on ``port``; what it was told before is kept."""
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(MPPS)
        self.server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_N_CREATE, self._on_create), (evt.EVT_N_SET, self._on_set)],
        )

    def stop(self) -> None:
        """Stop listening (an outage); start() again to come back."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def messages(self, uid: str | None = None) -> list[Received]:
        """What was received (for one step when ``uid`` is given), in order."""
        with self._lock:
            return [r for r in self.received if uid is None or r.sop_instance_uid == uid]


@pytest.fixture
def mpps_scp() -> Iterator[MppsScp]:
    """An MPPS SCP, not yet started (tests start it when they want the RIS up)."""
    scp = MppsScp()
    yield scp
    scp.stop()
