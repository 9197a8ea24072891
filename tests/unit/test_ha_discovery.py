"""Home Assistant discovery configs: valid by Home Assistant's rules, and their
templates give the right states for real state documents (rendered with Jinja2 as
Home Assistant renders them)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core.config import WebSettings
from gateway.status.ha_discovery import (
    DiscoveryInfo,
    discovery_messages,
    page_url,
    stale_destination_topic,
)
from tests.support.ha_schema import check_all, render

GID = "box-1"
INFO = DiscoveryInfo(
    gateway_id=GID,
    software="0.1.0",
    state_topic=f"dermgate/{GID}/state",
    status_topic=f"dermgate/{GID}/status",
    destinations=("pacs", "cloud_2"),
    configuration_url="https://box-1.clinic.lan:8443/",
)


def document(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "started": "2026-12-06T19:00:00+00:00",
        "spool": {
            "undelivered": 2,
            "oldest_undelivered_age_s": None,
            "commitment_lag_s": 3.5,
            "quarantined": 1,
            "counts": {"QUARANTINED": 4},
        },
        "disk": {"free_mb": 1000},
        "alarms": [],
        "destinations": [
            {"name": "pacs", "reachable": True},
            {"name": "cloud_2", "reachable": None},
        ],
        "verdict": {"colour": "green", "headline": "Delivering", "reasons": []},
        "health": {"pi": True, "cpu_temp_c": 51.2, "under_voltage": False},
    }
    doc.update(changes)
    return doc


def configs() -> dict[str, dict[str, Any]]:
    return check_all(discovery_messages(INFO))


def test_every_config_is_valid_and_carries_origin_and_the_page() -> None:
    got = configs()
    assert f"homeassistant/sensor/{GID}_undelivered/config" in got  # the first topics stay
    assert f"homeassistant/binary_sensor/{GID}/problem/config" in got
    assert f"homeassistant/binary_sensor/{GID}/dest_pacs/config" in got
    assert f"homeassistant/binary_sensor/{GID}/dest_cloud_2/config" in got
    for config in got.values():
        assert config["origin"] == {
            "name": "DermGate",
            "sw_version": "0.1.0",
            "support_url": "https://box-1.clinic.lan:8443/why",
        }
        assert config["device"]["configuration_url"] == "https://box-1.clinic.lan:8443/"
    uptime = got[f"homeassistant/sensor/{GID}_uptime/config"]
    assert uptime["device_class"] == "timestamp"
    assert "state_class" not in uptime
    assert "unit_of_measurement" not in uptime
    assert render(uptime, document()) == "2026-12-06T19:00:00+00:00"
    diagnostic = {t.split("/")[-2] for t, c in got.items() if c.get("entity_category")}
    assert {f"{GID}_disk_free", f"{GID}_uptime", f"{GID}_cpu_temperature"} <= diagnostic
    assert {"dest_pacs", "under_voltage"} <= diagnostic
    assert "problem" not in diagnostic  # the one a clinic's dashboard shows first


def test_without_a_known_page_address_no_link_is_made_up() -> None:
    got = check_all(
        discovery_messages(
            DiscoveryInfo(GID, "0.1.0", "s/state", "s/status", ("pacs",), configuration_url=None)
        )
    )
    for config in got.values():
        assert "configuration_url" not in config["device"]
        assert "support_url" not in config["origin"]


@pytest.mark.parametrize(
    ("web", "url"),
    [
        ({}, None),  # loopback
        ({"listen": "0.0.0.0:8080"}, None),
        ({"listen": "[::]:8080"}, None),
        ({"listen": "192.168.1.20:8080"}, "http://192.168.1.20:8080/"),
        ({"listen": "[fd00::5]:8443"}, "http://[fd00::5]:8443/"),
        ({"listen": "0.0.0.0:8443", "public_url": "https://derm.clinic"}, "https://derm.clinic/"),
    ],
)
def test_the_page_address_is_the_configured_one_never_a_wildcard(
    web: dict[str, Any], url: str | None
) -> None:
    assert page_url(WebSettings(**web)) == url
    assert page_url(None) is None


def test_quarantined_counts_captures_set_aside_now() -> None:
    sensor = configs()[f"homeassistant/sensor/{GID}_quarantined/config"]
    assert render(sensor, document()) == "1"  # not counts.QUARANTINED (resolved ones too)


def test_problem_follows_the_verdict() -> None:
    problem = configs()[f"homeassistant/binary_sensor/{GID}/problem/config"]
    assert problem["device_class"] == "problem"
    assert render(problem, document()) == "OFF"
    for colour in ("amber", "red"):
        doc = document(verdict={"colour": colour, "headline": "x", "reasons": ["y"]})
        assert render(problem, doc) == "ON"
    no_verdict = document()
    del no_verdict["verdict"]
    assert render(problem, no_verdict) is None


def test_connectivity_per_destination_from_its_reachable_flag() -> None:
    got = configs()
    pacs = got[f"homeassistant/binary_sensor/{GID}/dest_pacs/config"]
    cloud = got[f"homeassistant/binary_sensor/{GID}/dest_cloud_2/config"]
    assert pacs["device_class"] == cloud["device_class"] == "connectivity"
    assert render(pacs, document()) == "ON"
    assert render(cloud, document()) is None  # not tried yet: unknown, not "down"
    down = document(destinations=[{"name": "pacs", "reachable": False}])
    assert render(pacs, down) == "OFF"
    assert render(cloud, down) is None  # gone from the document: unknown


def test_box_health_sensors() -> None:
    got = configs()
    temp = got[f"homeassistant/sensor/{GID}_cpu_temperature/config"]
    assert (temp["device_class"], temp["unit_of_measurement"]) == ("temperature", "°C")
    assert render(temp, document()) == "51.2"
    volt = got[f"homeassistant/binary_sensor/{GID}/under_voltage/config"]
    assert volt["device_class"] == "problem"
    assert render(volt, document()) == "OFF"
    low = document(health={"pi": True, "cpu_temp_c": 60.0, "under_voltage": True})
    assert render(volt, low) == "ON"
    not_pi = document(health={"pi": False, "cpu_temp_c": None, "under_voltage": None})
    assert render(volt, not_pi) is None
    assert render(temp, not_pi) is None
    old = document()
    del old["health"]
    assert render(temp, old) is None


def test_only_this_boxs_removed_destinations_are_stale() -> None:
    configured = ("pacs",)
    prefix = f"homeassistant/binary_sensor/{GID}"
    assert stale_destination_topic(f"{prefix}/dest_old/config", GID, configured)
    assert not stale_destination_topic(f"{prefix}/dest_pacs/config", GID, configured)
    assert not stale_destination_topic(f"{prefix}/problem/config", GID, configured)
    other = f"homeassistant/binary_sensor/{GID}x/dest_old/config"
    assert not stale_destination_topic(other, GID, configured)
