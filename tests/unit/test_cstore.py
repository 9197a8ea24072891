"""The C-STORE seam's table of PACS answers: which status is success, retry or refusal.

The same seam against real pynetdicom SCPs is in ``tests/e2e/test_cstore.py``.
"""

from __future__ import annotations

import pytest

from gateway.forward.cstore import Verdict, classify_status


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (0x0000, Verdict.SUCCESS),
        (0xB000, Verdict.WARNING),
        (0xB007, Verdict.WARNING),
        (0xA700, Verdict.RETRYABLE),
        (0xA7FF, Verdict.RETRYABLE),
        (0x0110, Verdict.RETRYABLE),
        (0xA900, Verdict.PERMANENT),
        (0xC000, Verdict.PERMANENT),
        (0xCFFF, Verdict.PERMANENT),
        (0x0122, Verdict.PERMANENT),
        (0x1234, Verdict.RETRYABLE),
    ],
)
def test_status_table(status: int, verdict: Verdict) -> None:
    assert classify_status(status) is verdict
