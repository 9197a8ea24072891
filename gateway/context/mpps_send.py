"""N-CREATE and N-SET to the MPPS SCP: pynetdicom behind one thread seam.

:meth:`StepSender.send` is blocking; :class:`gateway.context.mpps.ProcedureSteps`
runs it with ``asyncio.to_thread``. One association carries what a step has to send
now (its N-CREATE, its final N-SET, or both, in that order) and is closed with
A-RELEASE unless the peer aborted it.

How the SCP's answer is classified (PS3.4 F.7.2 and PS3.7 Annex C):

===================================  ===========================  ================
Answer                               Meaning                      Outcome
===================================  ===========================  ================
0x0000, 0x0001, 0x0107, 0x0116       success (or with a warning)  acknowledged
0x0111 to an N-CREATE                the SCP has this instance    acknowledged (an
                                                                  earlier answer
                                                                  was lost)
0x0210, 0x0213, 0xA700-0xA7FF,       busy, out of resources       retried (busy)
0xFE00
any other status (0x0110 "may no     refused                      recorded, never
longer be updated", 0x0112, …)                                    retried (refused)
association rejected                 AE titles, SCP settings      retried
no answer / connection refused       SCP down or unreachable      retried
aborted                              SCP dropped the connection   retried
no accepted MPPS context             the SCP is no MPPS SCP       retried, shown
                                     (Orthanc)                    (not_accepted)
===================================  ===========================  ================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from gateway.core.procedure_step import StepError, StepErrorCode
from gateway.dicom.mpps import MPPS_SOP_CLASS
from gateway.dicom.network import dermgate_ae

__all__ = ["SendOutcome", "StepSender", "judge_status"]

_ACKNOWLEDGED = {0x0000, 0x0001, 0x0107, 0x0116}
_DUPLICATE_INSTANCE = 0x0111
_BUSY = {0x0210, 0x0213, 0xFE00}


def judge_status(status: int, *, creating: bool) -> StepErrorCode | None:
    """None when ``status`` acknowledges the message, else why not (see the table)."""
    if status in _ACKNOWLEDGED or (creating and status == _DUPLICATE_INSTANCE):
        return None
    if status in _BUSY or 0xA700 <= status <= 0xA7FF:
        return StepErrorCode.BUSY
    return StepErrorCode.REFUSED


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What one association achieved: ``created`` (the N-CREATE was acknowledged),
    ``finished`` (the final N-SET was), and why it stopped short, if it did."""

    created: bool = False
    finished: bool = False
    error: StepError | None = None


class StepSender:
    """Sends one step's messages to the MPPS SCP (``called_ae`` at ``host:port``)."""

    def __init__(
        self, calling_ae: str, called_ae: str, host: str, port: int, timeout: float
    ) -> None:
        self.calling_ae = calling_ae
        self.called_ae = called_ae
        self.host = host
        self.port = port
        self.timeout = timeout

    @property
    def peer(self) -> str:
        """``AE@host:port``, for the log (no patient data)."""
        return f"{self.called_ae}@{self.host}:{self.port}"

    def _associate(self) -> Any:
        ae = dermgate_ae(self.calling_ae)
        ae.add_requested_context(MPPS_SOP_CLASS)
        # Verification too: an SCP that refuses MPPS (Orthanc) then still accepts the
        # association, and says so by rejecting the MPPS context (not_accepted), where
        # an association with no accepted context at all would look unreachable.
        ae.add_requested_context(Verification)
        ae.connection_timeout = self.timeout
        ae.acse_timeout = self.timeout
        ae.dimse_timeout = self.timeout
        ae.network_timeout = self.timeout
        return ae.associate(self.host, self.port, ae_title=self.called_ae)

    def _unavailable(self, assoc: Any) -> StepError:
        if assoc.is_rejected:
            return StepError(
                StepErrorCode.ASSOCIATION_REJECTED, f"association rejected by {self.peer}"
            )
        # pynetdicom reports a refused connection as aborted too: both are "unreachable".
        return StepError(
            StepErrorCode.UNREACHABLE,
            f"could not open an association with {self.peer} (unreachable or aborted)",
        )

    def _answer(self, assoc: Any, status: Dataset, message: str) -> StepError | None:
        if status and "Status" in status:
            value = int(status.Status)
            code = judge_status(value, creating=message == "N-CREATE")
            if code is None:
                return None
            return StepError(code, f"{message} status 0x{value:04X} from {self.peer}", value)
        if assoc.is_aborted:
            return StepError(StepErrorCode.ABORTED, f"{self.peer} aborted during {message}")
        return StepError(StepErrorCode.NO_RESPONSE, f"no {message} response from {self.peer}")

    def send(
        self, sop_instance_uid: str, create: Dataset | None, final: Dataset | None
    ) -> SendOutcome:
        """N-CREATE ``create`` and then N-SET ``final`` (either may be None) for the
        step ``sop_instance_uid``; stops at the first one not acknowledged."""
        assoc = self._associate()
        if not assoc.is_established:
            return SendOutcome(error=self._unavailable(assoc))
        created = False
        try:
            if not any(cx.abstract_syntax == MPPS_SOP_CLASS for cx in assoc.accepted_contexts):
                return SendOutcome(
                    error=StepError(
                        StepErrorCode.NOT_ACCEPTED,
                        f"{self.peer} accepts no Modality Performed Procedure Step context",
                    )
                )
            if create is not None:
                status, _ = assoc.send_n_create(create, MPPS_SOP_CLASS, sop_instance_uid)
                error = self._answer(assoc, status, "N-CREATE")
                if error is not None:
                    return SendOutcome(error=error)
                created = True
            if final is not None:
                status, _ = assoc.send_n_set(final, MPPS_SOP_CLASS, sop_instance_uid)
                error = self._answer(assoc, status, "N-SET")
                if error is not None:
                    return SendOutcome(created=created, error=error)
                return SendOutcome(created=created, finished=True)
            return SendOutcome(created=created)
        finally:
            if assoc.is_established:
                assoc.release()
