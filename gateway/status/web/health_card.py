"""The overview's "Box health" card: the box's own health as the fleet sees it.

Rendered from the state document's ``health`` section (:mod:`gateway.status.pi_health`):
CPU temperature, the supply (under-voltage now, and since boot), throttling, SD/eMMC
wear. A box that is not a Raspberry Pi says "not a Pi" for the Pi-only lines: that
is a fact about the hardware, never shown as a fault.
"""

from __future__ import annotations

from html import escape
from typing import Any

__all__ = ["health_card"]


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _supply(health: dict[str, Any]) -> tuple[str, str]:
    """(text, css state) of the supply line."""
    if not health.get("pi"):
        return "not a Pi", "na"
    now = health.get("under_voltage")
    throttling = health.get("throttling") or {}
    if now is True:
        return "under-voltage now: replace the power supply", "fail"
    if now is None:
        return "not reported (vcgencmd unavailable)", "na"
    if throttling.get("under_voltage_since_boot"):
        return "OK now; under-voltage since boot: check the power supply", "warn"
    return "OK", "ok"


def _throttling(health: dict[str, Any]) -> tuple[str, str]:
    if not health.get("pi"):
        return "not a Pi", "na"
    t = health.get("throttling")
    if not t:
        return "not reported (vcgencmd unavailable)", "na"
    now = [
        label
        for key, label in (
            ("throttled", "throttled"),
            ("freq_capped", "frequency capped"),
            ("soft_temp_limit", "soft temperature limit"),
        )
        if t.get(key)
    ]
    if now:
        return ", ".join(now) + " now", "warn"
    if t.get("throttled_since_boot") or t.get("freq_capped_since_boot"):
        return "not now; throttled since boot", "warn"
    return "none", "ok"


def _storage(health: dict[str, Any]) -> tuple[str, str]:
    storage = health.get("storage")
    if not storage:
        return "no SD card or eMMC", "na"
    kind = str(storage.get("type") or "card")
    wear = storage.get("wear")
    if not wear:
        return f"{kind}: wear not reported", "na"
    eol = wear.get("pre_eol")
    used = [u for u in (wear.get("life_used_a"), wear.get("life_used_b")) if u]
    text = f"{kind}: " + (f"life used {' / '.join(used)}" if used else "wear not reported")
    if eol in ("warning", "urgent"):
        return f"{text}; reserve blocks {eol}: plan a new card (dermgate backup)", "warn"
    if "exceeded" in used:
        return f"{text}: plan a new card (dermgate backup)", "warn"
    return text + ("; reserve blocks normal" if eol == "normal" else ""), "ok"


def health_card(health: dict[str, Any]) -> str:
    """The card's HTML (empty when the document has no health section)."""
    if not health:
        return ""
    temp = health.get("cpu_temp_c")
    rows = [
        ("Model", (_e(health.get("model") or "not a Pi"), "na")),
        ("CPU temperature", (f"{temp:.1f} °C" if temp is not None else "not reported", "ok")),
        ("Power supply", _supply(health)),
        ("Throttling", _throttling(health)),
        ("Storage", _storage(health)),
    ]
    body = "".join(
        f'<tr data-health="{_e(label.lower())}"><th scope="row">{_e(label)}</th>'
        f'<td class="state {state}">{_e(text) if label != "Model" else text}</td></tr>'
        for label, (text, state) in rows
    )
    return (
        '<section class="box-health" aria-labelledby="box-health-title">'
        f'<h3 id="box-health-title">Box health</h3><table>{body}</table></section>'
    )
