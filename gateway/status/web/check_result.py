"""One line of the "why" panel, and its four statuses (shared by the check modules)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FAIL", "OK", "UNKNOWN", "WARN", "CheckResult"]

OK, WARN, FAIL, UNKNOWN = "ok", "warn", "fail", "unknown"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One line of the panel."""

    name: str
    status: str  # ok | warn | fail | unknown
    finding: str
    advice: str = ""
