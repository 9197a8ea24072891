"""Modality Performed Procedure Step (MPPS): the statuses a step goes through and why
reporting one failed.

A worklist session's step is created IN PROGRESS at its first capture and set
COMPLETED (everything stored) or DISCONTINUED (it ended empty) when it ends
(:mod:`gateway.context.mpps`). The ledger keeps the status wanted and the last one
the SCP acknowledged (:mod:`gateway.spool.mpps_queue`); a failed attempt is kept as a
:class:`StepError`, whose code and fixed phrase are what the state document shows
(the ``detail`` names the peer, never a patient, and goes to the log and the ledger).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["STEP_ERROR_PHRASES", "StepError", "StepErrorCode", "StepStatus"]


class StepStatus(enum.StrEnum):
    """Performed Procedure Step Status (0040,0252) values DermGate sends."""

    IN_PROGRESS = "IN PROGRESS"
    COMPLETED = "COMPLETED"
    DISCONTINUED = "DISCONTINUED"


class StepErrorCode(enum.StrEnum):
    """Why an N-CREATE/N-SET was not acknowledged (the value is the code shown)."""

    UNREACHABLE = "unreachable"
    ASSOCIATION_REJECTED = "association_rejected"
    NOT_ACCEPTED = "not_accepted"
    NO_RESPONSE = "no_response"
    ABORTED = "aborted"
    BUSY = "busy"
    REFUSED = "refused"
    NO_ORDER = "no_order"

    @property
    def retried(self) -> bool:
        """Whether the step is tried again (with backoff): all but a refusal for good."""
        return self not in (StepErrorCode.REFUSED, StepErrorCode.NO_ORDER)


STEP_ERROR_PHRASES: dict[str, str] = {
    StepErrorCode.UNREACHABLE: "cannot open a connection to the MPPS SCP",
    StepErrorCode.ASSOCIATION_REJECTED: (
        "the MPPS SCP rejected the association (AE titles or its settings)"
    ),
    StepErrorCode.NOT_ACCEPTED: (
        "the SCP does not accept Modality Performed Procedure Step (it is no MPPS SCP)"
    ),
    StepErrorCode.NO_RESPONSE: "the MPPS SCP did not answer in time",
    StepErrorCode.ABORTED: "the MPPS SCP dropped the connection",
    StepErrorCode.BUSY: "the MPPS SCP is out of resources for now",
    StepErrorCode.REFUSED: "the MPPS SCP refused the step",
    StepErrorCode.NO_ORDER: "the session's order cannot be read",
}
"""Code → the phrase shown on the page, MQTT and in the state document."""


@dataclass(frozen=True, slots=True)
class StepError:
    """One failed attempt: its code, the DIMSE status if the SCP sent one, and the
    text for the log and the ledger (``detail``: may name the peer, never a patient)."""

    code: StepErrorCode
    detail: str
    status: int | None = None

    @property
    def message(self) -> str:
        """The fixed phrase, with the status number when the SCP sent one."""
        phrase = STEP_ERROR_PHRASES[self.code]
        return phrase if self.status is None else f"{phrase} (0x{self.status:04X})"

    def shown(self) -> dict[str, str]:
        """``{"code", "message"}``, as the state document carries it."""
        return {"code": str(self.code), "message": self.message}
