"""The page's "Send now" (real HTTP, logged in, CSRF): it records the override after
its audit line and wakes the forwarders; it refuses while the window is open."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

from gateway.core.config import DermGateConfig
from gateway.spool.send_now import SendNowStore
from gateway.status.web.server import WebServer
from tests.support.web import add_user, csrf_of, login, served, web_config


def _with_windows(config: DermGateConfig, windows: list[str]) -> DermGateConfig:
    dest = config.destinations[0].model_copy(update={"send_windows": windows})
    return config.model_copy(update={"destinations": [dest]})


def _closed_now() -> str:
    now = datetime.now()
    return f"{(now + timedelta(hours=3)):%H:%M}-{(now + timedelta(hours=4)):%H:%M}"


def test_send_now_records_the_override_audited_and_wakes_the_forwarders(tmp_path: Path) -> None:
    config = _with_windows(web_config(tmp_path), [_closed_now()])
    add_user(config)
    pokes: list[int] = []

    async def scenario() -> None:
        server = WebServer(config, poke=lambda: pokes.append(1))
        async with served(server) as (base, session):
            page = await login(session, base)
            token = csrf_of(await page.text())
            url = f"{base}/destinations/pacs/send-now"
            async with session.post(url, data={"csrf": "forged"}) as r:
                assert r.status == 403
            assert SendNowStore(config.gateway.state_dir).get("pacs") is None
            assert not pokes
            async with session.post(url, data={"csrf": token}) as r:
                assert r.status == 200
                assert "are being sent now" in await r.text()

    asyncio.run(scenario())
    override = SendNowStore(config.gateway.state_dir).get("pacs")
    assert override is not None
    assert override.by == "tech"
    assert pokes == [1]
    audit = config.audit_path().read_text(encoding="utf-8")
    assert audit.rstrip().endswith("user=tech action=send-now destination=pacs")


def test_send_now_is_refused_while_sending_is_allowed_anyway(tmp_path: Path) -> None:
    always = web_config(tmp_path)
    add_user(always)

    async def scenario(config: DermGateConfig, expected: str) -> None:
        async with served(WebServer(config)) as (base, session):
            token = csrf_of(await (await login(session, base)).text())
            async with session.post(
                f"{base}/destinations/pacs/send-now", data={"csrf": token}
            ) as r:
                assert r.status == 409
                assert expected in await r.text()

    asyncio.run(scenario(always, "pacs has no send windows: it always sends."))
    now = datetime.now()
    is_open = f"{(now - timedelta(hours=1)):%H:%M}-{(now + timedelta(hours=1)):%H:%M}"
    asyncio.run(scenario(_with_windows(always, [is_open]), "The send window of pacs is open"))
    assert SendNowStore(always.gateway.state_dir).get("pacs") is None


def test_the_verdict_calls_a_wait_for_the_window_neither_a_fault_nor_a_delay() -> None:
    from gateway.status.web.data import DestinationFigures, DiskFigures, Figures, verdict

    def figures(dest: DestinationFigures) -> Figures:
        return Figures(
            counts={"WRAPPED": 2},
            quarantined_open=0,
            oldest_waiting_age=7200.0,  # two hours: past the 10-minute amber
            commitment_lag=None,
            destinations=[dest],
            delivered_by_class={},
            quarantined_by_class={},
            disk=DiskFigures(free=10**10, total=10**11, reserve=10**8),
        )

    waiting = DestinationFigures(
        "pacs",
        "h",
        104,
        False,
        pending=2,
        window_open=False,
        next_window="2026-12-06T18:00:00+00:00",
    )
    assert waiting.waiting_for_window
    shown = verdict(figures(waiting))
    assert shown.colour == "green"
    assert shown.headline == "Waiting for the send window: 2 to send"
    sending_now = DestinationFigures(
        "pacs", "h", 104, False, pending=2, window_open=False, send_now=True
    )
    assert not sending_now.waiting_for_window
    assert verdict(figures(sending_now)).colour == "amber", "sending, and late: a look is due"
