"""Third-party driver plugins: the test plugins (tests/plugins/dermgate-testdriver) are
a separate distribution found by entry point. ``check-config`` against plugins, broken
ones included, is in ``tests/e2e/test_plugins.py``.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from gateway.devices.registry import ENTRY_POINT_GROUP, available_drivers, find_driver


def test_test_plugins_are_a_separate_distribution_found_by_entry_point() -> None:
    eps = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for driver_id in ("test-crasher", "test-hanger"):
        ep = eps[driver_id]
        assert ep.dist is not None
        assert ep.dist.name == "dermgate-testdriver", "not part of dermgate itself"
        assert find_driver(driver_id).id == driver_id
    found, _broken = available_drivers()
    assert {"serial-dermatoscope", "test-crasher", "test-hanger"} <= set(found)
