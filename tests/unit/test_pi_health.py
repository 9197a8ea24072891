"""The box's health from the files a Raspberry Pi has, in a sysfs tree built in tmp.

A fan-less Pi in a clinic cupboard with a phone charger as its supply is the usual
way an edge box dies slowly: the fleet must see the temperature, the under-voltage
(now, and since boot) and a wearing eMMC, and a box that is not a Pi must say so
without any of it counting as a fault.
"""

from __future__ import annotations

from pathlib import Path

from gateway.core.events import EventBus
from gateway.status.pi_health import HealthMonitor, decode_throttled, read_health
from gateway.status.web.health_card import health_card
from tests.support.pi_sysfs import PI4, pi_tree, put


def test_a_healthy_pi_with_an_sd_card(tmp_path: Path) -> None:
    health = read_health(pi_tree(tmp_path))
    assert health["pi"] is True
    assert health["model"] == PI4
    assert health["cpu_temp_c"] == 48.3
    assert health["under_voltage"] is False
    assert health["throttling"]["raw"] == "0x0"
    assert not any(v for k, v in health["throttling"].items() if k != "raw")
    assert health["storage"] == {"device": "mmcblk0", "type": "SD", "wear": None}
    card = health_card(health)
    assert "48.3 °C" in card
    assert "SD: wear not reported" in card
    assert 'class="state fail"' not in card


def test_throttled_bits_now_and_since_boot_are_decoded() -> None:
    # 0x50005: under-voltage and throttled now, both also since boot.
    got = decode_throttled(0x50005)
    now = {k for k in ("under_voltage", "freq_capped", "throttled", "soft_temp_limit") if got[k]}
    assert now == {"under_voltage", "throttled"}
    since = {k for k, v in got.items() if k.endswith("_since_boot") and v}
    assert since == {"under_voltage_since_boot", "throttled_since_boot"}
    past = decode_throttled(0xA0000)  # capped and soft limit since boot, fine now
    assert {k for k, v in past.items() if v is True} == {
        "freq_capped_since_boot",
        "soft_temp_limit_since_boot",
    }


def test_under_voltage_since_boot_warns_but_is_no_alarm(tmp_path: Path) -> None:
    health = read_health(pi_tree(tmp_path, throttled="0x50000"))
    assert health["under_voltage"] is False
    assert health["throttling"]["under_voltage_since_boot"] is True
    card = health_card(health)
    assert "under-voltage since boot: check the power supply" in card


def test_the_live_hwmon_flag_wins_and_without_vcgencmd_it_still_tells(tmp_path: Path) -> None:
    health = read_health(pi_tree(tmp_path, throttled=None, lcrit="1"))
    assert health["under_voltage"] is True
    assert health["throttling"] is None  # no firmware tool: the sticky bits are unknown
    assert "not reported (vcgencmd unavailable)" in health_card(health)


async def test_under_voltage_now_raises_the_alarm_and_clears_it(tmp_path: Path) -> None:
    root = pi_tree(tmp_path, throttled="0x50005", lcrit="1")
    bus = EventBus()
    monitor = HealthMonitor(bus, root=root)
    subscription = bus.subscribe(100)
    await monitor.read_once()
    assert ("under_voltage", "") in bus.alarms
    assert monitor.section()["under_voltage"] is True
    assert "replace the power supply" in health_card(monitor.section())
    await monitor.read_once()  # still low: raised once
    put(root, "sys/class/hwmon/hwmon1/in0_lcrit_alarm", "0\n")
    await monitor.read_once()
    assert ("under_voltage", "") not in bus.alarms
    kinds = []
    while len(subscription):
        seq, event = subscription.peek()
        kinds.append(event["kind"])
        subscription.pop(seq)
    assert kinds == ["alarm_raised", "alarm_cleared"]


def test_emmc_wear_is_reported_and_a_worn_card_says_what_to_do(tmp_path: Path) -> None:
    root = pi_tree(tmp_path)
    put(root, "sys/block/mmcblk0/device/type", "MMC\n")
    put(root, "sys/block/mmcblk0/device/life_time", "0x02 0x0b\n")
    put(root, "sys/block/mmcblk0/device/pre_eol_info", "0x02\n")
    storage = read_health(root)["storage"]
    assert storage["wear"] == {
        "life_used_a": "10-20%",
        "life_used_b": "exceeded",
        "pre_eol": "warning",
    }
    card = health_card(read_health(root))
    assert "reserve blocks warning: plan a new card" in card


def test_not_a_pi_is_a_fact_not_a_fault(tmp_path: Path) -> None:
    put(tmp_path, "sys/class/thermal/thermal_zone0/temp", "35000\n")  # a PC's sensor
    health = read_health(tmp_path)
    assert health["pi"] is False
    assert health["model"] is None
    assert health["cpu_temp_c"] == 35.0
    assert health["under_voltage"] is None
    assert health["throttling"] is None
    assert health["storage"] is None
    card = health_card(health)
    assert card.count("not a Pi") >= 2
    assert "fail" not in card
    assert "warn" not in card
    assert read_health(tmp_path / "empty")["cpu_temp_c"] is None


async def test_before_the_first_read_everything_is_unknown() -> None:
    monitor = HealthMonitor(EventBus(), root=Path("/nonexistent"))
    assert monitor.section()["cpu_temp_c"] is None
    assert monitor.section()["under_voltage"] is None
