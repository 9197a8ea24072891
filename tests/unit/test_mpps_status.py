"""The MPPS seam's table of SCP answers: acknowledged, retried (busy) or refused for good.

The same seam against a real pynetdicom MPPS SCP and Orthanc is in
``tests/e2e/test_mpps.py`` and ``tests/e2e/test_mpps_outages.py``.
"""

from __future__ import annotations

import pytest

from gateway.context.mpps_send import judge_status
from gateway.core.procedure_step import StepErrorCode


@pytest.mark.parametrize(
    ("status", "creating", "outcome"),
    [
        (0x0000, True, None),
        (0x0000, False, None),
        (0x0001, False, None),  # optional attributes not supported: a warning
        (0x0107, True, None),  # attribute list error: a warning
        (0x0111, True, None),  # duplicate instance: an earlier N-CREATE got through
        (0x0111, False, StepErrorCode.REFUSED),
        (0x0110, False, StepErrorCode.REFUSED),  # may no longer be updated
        (0x0112, False, StepErrorCode.REFUSED),  # no such instance
        (0x0120, True, StepErrorCode.REFUSED),  # missing attribute
        (0x0213, True, StepErrorCode.BUSY),
        (0xA700, False, StepErrorCode.BUSY),
        (0xFE00, True, StepErrorCode.BUSY),
    ],
)
def test_status_table(status: int, creating: bool, outcome: StepErrorCode | None) -> None:
    assert judge_status(status, creating=creating) is outcome
    if outcome is not None:
        assert outcome.retried is (outcome is StepErrorCode.BUSY)
