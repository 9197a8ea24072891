"""docs/monitoring/ is usable as shipped: promtool accepts the alert rules and their test
(input series → the alerts that must and must not fire), the Grafana dashboard imports
with the data source as a variable and parses as PromQL, both use only metrics DermGate
exports, and README's metric table lists exactly what ``/metrics`` has."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from gateway.status.web.metrics import FAMILIES
from tests.support.monitoring import (
    DASHBOARD,
    RULES,
    RULES_TEST,
    concrete,
    dashboard,
    dashboard_expressions,
    metric_names,
    rule_expressions,
)

README = Path(__file__).resolve().parents[2] / "README.md"
HISTOGRAMS = {name for name, (kind, _) in FAMILIES.items() if kind == "histogram"}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=120, cwd=RULES.parent
    )


def test_promtool_checks_the_alert_rules() -> None:
    out = _promtool("check", "rules", RULES.name)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rule_expressions())} rules found" in out.stdout


def test_promtool_rule_tests_pass() -> None:
    out = _promtool("test", "rules", RULES_TEST.name)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_rules_cover_what_an_operator_must_hear_about() -> None:
    assert set(rule_expressions()) >= {
        "DermGateDown",  # box offline: up == 0
        "DermGateAbsent",  # ... or not scraped at all
        "DermGateNotDelivering",
        "DermGateCommitmentOverdue",
        "DermGateDiskNearlyFull",
        "DermGateDriverQuarantined",
        "DermGateCertificateExpiring",
    }


def test_the_dashboard_imports_with_the_data_source_as_a_variable(tmp_path: Path) -> None:
    dash = dashboard()
    [needed] = dash["__inputs"]
    assert needed["pluginId"] == "prometheus"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    source = {"type": "prometheus", "uid": "${datasource}"}
    titles = [p["title"] for p in dash["panels"]]
    for panel in dash["panels"]:
        assert panel["datasource"] == source, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["datasource"] == source for t in panel["targets"]), panel["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(set(ids)) == len(ids)
    for wanted in ("Delivery rate", "Pending and stuck", "Spool disk", "Alarms",
                   "Commitment overdue", "Certificates"):  # fmt: skip
        assert wanted in titles
    assert any("histogram_quantile" in e for e in dashboard_expressions())
    # Every expression parses: promtool checks them as recording rules.
    rules = tmp_path / "dashboard-exprs.yml"
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for n, expr in enumerate(dashboard_expressions()):
        lines += [f"      - record: dashboard:expr{n}", f"        expr: '{concrete(expr)}'"]
    rules.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = subprocess.run(
        ["promtool", "check", "rules", str(rules)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr + DASHBOARD.name


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    used = metric_names([*rule_expressions().values(), *dashboard_expressions()], HISTOGRAMS)
    assert used - {"up"} <= set(FAMILIES), used - {"up"} - set(FAMILIES)


def test_readme_metric_table_matches_the_exported_families() -> None:
    text = README.read_text(encoding="utf-8")
    rows = re.findall(r"^\| `((?:dermgate|process)_[a-z_]+)` \| (\w+) \| ([^|]*)\|", text, re.M)
    table = {name: (kind, labels.strip().replace("`", "")) for name, kind, labels in rows}
    assert table == {name: (kind, labels or "-") for name, (kind, labels) in FAMILIES.items()}
