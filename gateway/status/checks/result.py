"""One check's line (the page's "why" panel, a line of ``dermgate check``) and its four
statuses."""

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
