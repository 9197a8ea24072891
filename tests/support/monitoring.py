"""The monitoring files in docs/monitoring/ (alert rules, Grafana dashboard) as the tests
read them: their PromQL expressions and the metric names those use."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

MONITORING = Path(__file__).resolve().parents[2] / "docs" / "monitoring"
RULES = MONITORING / "dermgate-alerts.yml"
RULES_TEST = MONITORING / "dermgate-alerts.test.yml"
DASHBOARD = MONITORING / "dermgate-dashboard.json"

_NAME = re.compile(r"\b((?:dermgate|process)_[a-z_]+|up)\b(?!\s*\()")
_HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")


_RULE = re.compile(r"^\s*- alert: (\w+)\n\s*expr: (.+)$", re.MULTILINE)


def rule_expressions() -> dict[str, str]:
    """Alert name → its expression (each on one line, right after its name: promtool
    checks the file's full syntax; this reads only what the tests compare)."""
    return dict(_RULE.findall(RULES.read_text(encoding="utf-8")))


def dashboard() -> dict[str, Any]:
    """The dashboard's JSON."""
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def dashboard_expressions() -> list[str]:
    """Every panel target's PromQL, and the template variables' queries."""
    found = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            found.append(var["definition"])
    return found


def concrete(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced, so promtool can parse it."""
    return (
        expr.replace("$__rate_interval", "5m")
        .replace("$instance", ".*")
        .replace("label_values(dermgate_build_info, instance)", "dermgate_build_info")
    )


def metric_names(exprs: list[str], histograms: set[str]) -> set[str]:
    """The metric names ``exprs`` use (a histogram's series by the family's name)."""
    names: set[str] = set()
    for expr in exprs:
        without_strings = re.sub(r'"[^"]*"', '""', expr)
        for name in _NAME.findall(without_strings):
            for part in _HISTOGRAM_PARTS:
                if name.endswith(part) and name.removesuffix(part) in histograms:
                    name = name.removesuffix(part)
            names.add(name)
    return names
