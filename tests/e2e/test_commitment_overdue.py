"""The technician is told when the PACS stores but does not confirm.

A pynetdicom PACS stores and accepts the commitment request, then keeps its report
back (as one does whose entry for our AE title has a wrong port, or behind a
firewall). After ``commitment_alarm_after`` seconds the ``commitment_overdue``
alarm must be on MQTT (state and events, real Mosquitto), in ``/metrics``, amber on
the overview, and explained on the "why" page; when the report then arrives it
clears everywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from gateway.demo.local_orthanc import free_port
from gateway.service.config import load_config
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.mqtt import Mosquitto, Recorder
from tests.support.peers import HeldAssociations, MisbehavingPacs
from tests.support.simulator import SimulatorProcess
from tests.support.state import states
from tests.support.waiting import wait_for
from tests.support.web import add_user, login

BASE = "dermgate/test-box-01"
STATE, EVENTS = f"{BASE}/state", f"{BASE}/events"
ALARM = {"code": "commitment_overdue", "subject": "pacs"}
METRIC = 'dermgate_alarm{code="commitment_overdue",subject="pacs"} 1.0'


def _overdue_in_state(rec: Recorder) -> bool | None:
    got = rec.on(STATE)
    if not got:
        return None
    alarms = got[-1].json()["alarms"]
    return any({"code": a["code"], "subject": a["subject"]} == ALARM for a in alarms)


def _alarm_events(rec: Recorder, kind: str) -> list[dict[str, Any]]:
    return [
        e
        for e in (m.json() for m in rec.on(EVENTS))
        if e["kind"] == kind and e["code"] == ALARM["code"]
    ]


async def _pages(base: str) -> dict[str, str]:
    """/metrics without a login, then the overview fragment and the why page."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(f"{base}/metrics") as r:
            metrics = await r.text()
        assert (await login(session, base)).status == 200
        async with session.get(f"{base}/") as r:
            overview = await r.text()
        async with session.get(f"{base}/why") as r:
            why = await r.text()
    return {"metrics": metrics, "overview": overview, "why": why}


def test_commitment_overdue_is_raised_everywhere_and_clears_on_the_report(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    mosquitto: Mosquitto,
    recorder_factory: Callable[..., Recorder],
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    rec = recorder_factory(mosquitto, [f"{BASE}/#"])
    pacs.commit_script = ["hold"]
    pacs.start()
    assert pacs.report_to is not None
    web_port = free_port()
    config = gateway_config(
        tmp_path,
        pacs_port=pacs.port,
        pacs_ae="MISBEHAVE",
        listen_port=pacs.report_to,
        commitment_timeout=300.0,
        extra_destination="commitment_alarm_after = 2",
    )
    with config.open("a", encoding="utf-8") as fh:
        fh.write("\n" + mosquitto.config_section())
        fh.write(f'\n[web]\nlisten = "127.0.0.1:{web_port}"\n')
    add_user(load_config(config))
    base = f"http://127.0.0.1:{web_port}"
    simulator_factory("--captures", "1")
    gateway = gateway_factory(config)
    state_dir = tmp_path / "state"

    wait_for(lambda: pacs.held and states(state_dir) == ["SENT"], 90, "a report held back")
    rec.wait(lambda: _overdue_in_state(rec), 60, "commitment_overdue in the MQTT state")
    [raised] = _alarm_events(rec, "alarm_raised")
    assert raised["subject"] == "pacs"
    assert "does not confirm" in raised["message"]

    pages = asyncio.run(_pages(base))
    assert METRIC in pages["metrics"]
    assert 'data-verdict="amber"' in pages["overview"]
    assert "commitment_overdue" in pages["overview"]
    why = pages["why"]
    assert "stores the captures but does not confirm" in why
    assert "DERMGATE" in why, "the AE title the PACS must know"
    assert str(pacs.report_to) in why, "the port the PACS must send its reports to"
    assert "can send its confirmations" not in why
    assert len(_alarm_events(rec, "alarm_raised")) == 1, "raised once, not on every check"

    # The report arrives: the alarm clears.
    pacs.release_held()
    wait_for(lambda: states(state_dir) == ["COMMITTED"], 60, "the report applied")
    rec.wait(lambda: _alarm_events(rec, "alarm_cleared"), 30, "alarm_cleared event")
    rec.wait(lambda: _overdue_in_state(rec) is False, 30, "the alarm gone from the state")
    pages = asyncio.run(_pages(base))
    assert "commitment_overdue" not in pages["metrics"]
    assert "does not confirm" not in pages["why"]
    log = gateway.log()
    assert log.count("stores captures but does not confirm") == 1, "logged once when raised"
    assert gateway.stop() == 0


def test_a_listener_that_cannot_associate_is_named_as_the_cause(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    """Every association slot of our listener taken (by a peer at the PACS's own
    address): the alarm is raised and the "why" page says the listener cannot
    associate, not that it works; once the slots are free the report commits."""
    pacs.commit_script = ["hold"]
    pacs.start()
    assert pacs.report_to is not None
    web_port = free_port()
    config = gateway_config(
        tmp_path,
        pacs_port=pacs.port,
        pacs_ae="MISBEHAVE",
        listen_port=pacs.report_to,
        commitment_timeout=300.0,
        extra_destination="commitment_alarm_after = 2",
    )
    with config.open("a", encoding="utf-8") as fh:
        fh.write(f'\n[web]\nlisten = "127.0.0.1:{web_port}"\n')
    add_user(load_config(config))
    base = f"http://127.0.0.1:{web_port}"
    simulator_factory("--captures", "1")
    gateway = gateway_factory(config)
    state_dir = tmp_path / "state"
    wait_for(lambda: pacs.held and states(state_dir) == ["SENT"], 90, "a report held back")

    held = HeldAssociations(pacs.report_to)
    try:
        assert held.fill() >= 1
        wait_for(lambda: "does not confirm" in gateway.log(), 60, "commitment_overdue raised")
        why = asyncio.run(_pages(base))["why"]
        assert "stores the captures but does not confirm" in why
        assert "cannot arrive either" in why, "the listener check fails"
        assert "Listening here" not in why, "not told that the listener works"
    finally:
        held.release()
    pacs.release_held()
    wait_for(lambda: states(state_dir) == ["COMMITTED"], 60, "the report applied")
    wait_for(lambda: "confirms again" in gateway.log(), 30, "commitment_overdue cleared")
    assert "cannot arrive either" not in asyncio.run(_pages(base))["why"]
    assert gateway.stop() == 0
