"""Send windows and ``max_mbps`` on a real ``dermgate run`` sending to Orthanc.

Outside the window captures stay WRAPPED, shown as "waiting for the send window"
(spool list/show, the page), with no attempt, no backoff and no alarm (even with a
``stuck_after`` far shorter than the wait); the page's "Send now" (logged in, CSRF,
audited) sends them, paced by ``max_mbps``; a window that opens releases what
waits, not before it opens. Timing assertions are lower bounds only.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.demo.local_orthanc import OrthancProcess, free_port
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.mqtt import Mosquitto, Recorder
from tests.support.simulator import SimulatorProcess
from tests.support.state import delivery_rows, ledger_rows, states
from tests.support.waiting import wait_for
from tests.support.web import PASSWORD, cookie_client, csrf_of, login_status, run_cli, user_add

MAX_MBPS = 4.0  # 500,000 bytes per second: two ~2.7 MB captures take >= 10 s
RATE = MAX_MBPS * 1_000_000 / 8
BURST = max(RATE / 4, 64 * 1024)  # the bucket's burst (gateway.forward.bucket)
STATE = "dermgate/test-box-01/state"


def _hm(moment: datetime) -> str:
    return moment.strftime("%H:%M")


def _config(
    tmp_path: Path, orthanc: OrthancProcess, window: str, extra: str = ""
) -> tuple[Path, str]:
    """A gateway sending to ``orthanc`` within ``window``, with the page on."""
    port = free_port()
    config = gateway_config(
        tmp_path,
        pacs_port=orthanc.dicom_port,
        extra_destination=f'send_windows = ["{window}"]\nstuck_after = 2\n{extra}',
    )
    with config.open("a", encoding="utf-8") as out:
        out.write(f'\n[web]\nlisten = "127.0.0.1:{port}"\n')
    return config, f"http://127.0.0.1:{port}"


def _pacs_state(rec: Recorder) -> tuple[dict[str, Any], list[Any]] | None:
    """The newest state document's entry for pacs, and its alarms."""
    got = rec.on(STATE)
    if not got:
        return None
    document = got[-1].json()
    (pacs,) = document["destinations"]
    return pacs, document["alarms"]


def _cli(*args: str) -> tuple[int, str, str]:
    result = run_cli(*args)
    return result.returncode, result.stdout, result.stderr


def test_outside_the_window_captures_wait_and_send_now_on_the_page_sends_them(
    tmp_path: Path,
    orthanc: OrthancProcess,
    mosquitto: Mosquitto,
    recorder_factory: Callable[..., Recorder],
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    now = datetime.now()  # the box's local time, as the service reads its windows
    window = f"{_hm(now + timedelta(hours=3))}-{_hm(now + timedelta(hours=4))}"
    config, base = _config(tmp_path, orthanc, window, f"max_mbps = {MAX_MBPS}")
    with config.open("a", encoding="utf-8") as out:
        out.write("\n" + mosquitto.config_section())
    rec = recorder_factory(mosquitto, [STATE])
    user_add(config, "tech", PASSWORD)
    state_dir = tmp_path / "state"
    gateway = gateway_factory(config)
    sim = simulator_factory("--captures", "2", "--interval", "0.1")
    assert sim.wait(120) == 0, gateway.log()[-4000:]
    wait_for(lambda: states(state_dir) == ["WRAPPED", "WRAPPED"], 60, "2 captures wrapped")
    wait_for(lambda: "outside its send windows" in gateway.log(), 30, "the wait logged")
    time.sleep(4)  # twice stuck_after, and more than one turn of the stuck watch

    # Waiting, not failing: no attempt, no error, no alarm.
    assert [d["attempts"] for d in delivery_rows(state_dir)] == [0, 0]
    assert all(d["last_error"] is None for d in delivery_rows(state_dir))
    log = gateway.log()
    assert "STUCK" not in log
    assert "unavailable" not in log
    assert orthanc.rest("GET", "/instances") == []
    pacs, alarms = rec.wait(
        lambda: (got := _pacs_state(rec)) and got[0]["pending"] == 2 and got,
        60,
        "the state document to count both captures",
    )
    assert pacs["waiting_for_window"] is True
    assert pacs["window_open"] is False
    assert pacs["send_windows"] == [window]
    assert pacs["next_window"] is not None
    assert pacs["send_now"] is False
    assert pacs["last_error"] is None
    assert pacs["stuck"] == 0
    assert alarms == []

    code, out, err = _cli("spool", "list", "--config", str(config))
    assert code == 0, err
    opens = window.split("-")[0]
    assert out.count("waiting for the send window: pacs (opens ") == 2, out
    assert f"{opens})" in out
    code, out, err = _cli("spool", "list", "--json", "--config", str(config))
    assert [json.loads(line)["waiting_for_window"] for line in out.splitlines()] == [["pacs"]] * 2
    spool_id = str(ledger_rows(state_dir)[0]["id"])
    code, out, err = _cli("spool", "show", spool_id, "--config", str(config))
    assert code == 0, err
    assert "Waiting               for the send window (opens " in out
    code, out, err = _cli("spool", "show", spool_id, "--json", "--config", str(config))
    [delivery] = json.loads(out)["deliveries"]
    assert delivery["waiting_for_window"] is True
    assert delivery["next_window"] is not None
    code, out, err = _cli("spool", "send-now", "--destination", "nope", "--config", str(config))
    assert code == 4
    assert "no destination named nope (configured: pacs)" in err

    sizes = sum((state_dir / "spool" / "dicom" / r["dicom_name"]).stat().st_size
                for r in ledger_rows(state_dir))  # fmt: skip
    assert sizes > 2 * BURST, "the captures must outweigh the burst for the bound to mean much"

    async def page() -> float:
        async with cookie_client() as tech:
            assert await login_status(tech, base, "tech", PASSWORD) == 303
            async with tech.get(f"{base}/") as r:
                html = await r.text()
            assert 'data-window="waiting"' in html
            assert f"waiting for the send window (opens {opens})" in html
            assert 'action="/destinations/pacs/send-now"' in html
            # A wait for the window is neither a fault nor a delay (the device, whose
            # simulator has gone, may add its own amber line: not asserted here).
            assert 'data-verdict="red"' not in html
            assert "does not take captures" not in html
            assert "waiting for more than 10 minutes" not in html
            async with tech.get(f"{base}/why") as r:
                assert "2 waiting for the send window (not a fault)." in await r.text()
            async with tech.post(f"{base}/destinations/pacs/send-now", data={"csrf": "x"}) as r:
                assert r.status == 403, "no override without the session's CSRF token"
            async with tech.post(f"{base}/destinations/nope/send-now", data={"csrf": csrf_of(html)}) as r:  # fmt: skip
                assert r.status == 404
            assert states(state_dir) == ["WRAPPED", "WRAPPED"]
            started = time.monotonic()
            async with tech.post(
                f"{base}/destinations/pacs/send-now", data={"csrf": csrf_of(html)}
            ) as r:
                assert r.status == 200
                assert "Sending now" in await r.text()
            await asyncio.to_thread(
                wait_for, lambda: states(state_dir) == ["SENT", "SENT"], 120, "sent now"
            )
            elapsed = time.monotonic() - started
            await asyncio.to_thread(
                wait_for,
                lambda: not (state_dir / "send-now" / "pacs.json").exists(),
                30,
                "the override to end once nothing waits",
            )
            async with tech.get(f"{base}/") as r:
                html = await r.text()
            assert 'data-window="waiting"' not in html
        return elapsed

    elapsed = asyncio.run(page())
    assert elapsed >= (sizes - BURST) / RATE, f"{sizes} bytes in {elapsed:.1f} s at {MAX_MBPS} Mbps"
    for row in ledger_rows(state_dir):
        assert orthanc.find_instances(row["sop_instance_uid"]), "stored in Orthanc"
    assert [d["attempts"] for d in delivery_rows(state_dir)] == [1, 1]
    audit = (state_dir / "web" / "audit.log").read_text(encoding="utf-8")
    assert "user=tech action=send-now destination=pacs" in audit
    pacs, alarms = rec.wait(
        lambda: (got := _pacs_state(rec)) and got[0]["pending"] == 0 and got,
        60,
        "the state document to show everything sent",
    )
    assert pacs["waiting_for_window"] is False
    assert pacs["send_now"] is False
    assert alarms == []
    log = gateway.log()
    assert "send now done, nothing left waiting" in log
    assert "STUCK" not in log
    assert gateway.stop() == 0


def test_a_window_opening_releases_the_waiting_captures(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    # The window opens at the first whole minute at least 60 s away (time enough to
    # take and wrap the captures first) and lasts an hour.
    now = datetime.now()
    opening = (now + timedelta(seconds=120)).replace(second=0, microsecond=0)
    window = f"{_hm(opening)}-{_hm(opening + timedelta(hours=1))}"
    config, _ = _config(tmp_path, orthanc, window)
    state_dir = tmp_path / "state"
    gateway = gateway_factory(config)
    sim = simulator_factory("--captures", "2", "--interval", "0.1")
    assert sim.wait(120) == 0, gateway.log()[-4000:]
    wait_for(lambda: states(state_dir) == ["WRAPPED", "WRAPPED"], 60, "2 captures wrapped")
    assert datetime.now() < opening, "the machine was too slow to take the captures in time"
    assert [d["attempts"] for d in delivery_rows(state_dir)] == [0, 0]

    left = (opening - datetime.now()).total_seconds()
    wait_for(lambda: states(state_dir) == ["SENT", "SENT"], left + 120, "the window to open")
    sent = [d["sent_epoch"] for d in delivery_rows(state_dir)]
    assert min(sent) >= opening.timestamp(), "nothing went before the window opened"
    assert [d["attempts"] for d in delivery_rows(state_dir)] == [1, 1]
    for row in ledger_rows(state_dir):
        assert orthanc.find_instances(row["sop_instance_uid"])

    # The window is open now: "send now" has nothing to override.
    code, _, err = _cli("spool", "send-now", "--destination", "pacs", "--config", str(config))
    assert code == 4
    assert "the send window of pacs is open" in err
    log = gateway.log()
    assert "send window open" in log
    assert "STUCK" not in log
    assert gateway.stop() == 0
