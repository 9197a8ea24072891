"""Several destinations and ``[[routes]]`` through the running gateway, with real receivers.

Two Orthancs (the clinic's PACS and a research archive, each confirming by Storage
Commitment) or a scripted pynetdicom PACS; real devices' simulators (the serial
dermatoscope, the RCM-1 confocal microscope over emulated USB); ``dermgate run`` as
a child process. Each capture must reach exactly the destinations its routes name,
and its local copy may go only once every one of them confirmed it.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

from gateway.demo.local_orthanc import OrthancProcess, free_port
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.peers import MisbehavingPacs
from tests.support.simulator import SimulatorProcess
from tests.support.state import delivery_rows, ledger_rows, states
from tests.support.usb_confocal import ConfocalSimulator
from tests.support.waiting import wait_for
from tests.support.web import PASSWORD, cookie_client, csrf_of, login, run_cli, user_add

DERMOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.7"

# Confirmed captures stay on disk however full the test machine's shared disk is
# (the purge stage's watermarks look at the whole filesystem, not at the spool).
KEEP_CONFIRMED = "purge_high_watermark = 100\npurge_low_watermark = 100"

SCOPE = """
[[devices]]
driver = "serial-dermatoscope"
name = "scope"
port = "{link}"
stall_timeout = 5
reconnect_max = 1
"""

RCM = """
[[devices]]
driver = "usb-confocal"
name = "rcm"
usb_backend = "emulated:{socket}"
stall_timeout = 5
reconnect_max = 1
"""


def research(port: int, *, commit: bool = True) -> str:
    """The research archive's ``[[destinations]]`` table."""
    return f"""
[[destinations]]
name = "research"
kind = "dicom"
ae_title = "RESEARCH"
host = "127.0.0.1"
port = {port}
storage_commitment = {"true" if commit else "false"}
commitment_timeout = 20
commitment_batch_delay = 0.2
retry_initial = 0.5
retry_max = 2.0
connect_timeout = 3
acse_timeout = 5
dimse_timeout = 10
network_timeout = 10
"""


def research_orthanc(tmp_path: Path, pacs: OrthancProcess, port: int) -> OrthancProcess:
    """A second Orthanc (AE RESEARCH) reporting commitment to the same gateway listener."""
    return OrthancProcess(
        tmp_path / "research",
        aet="RESEARCH",
        dicom_port=port,
        modalities=dict(pacs.modalities),
    )


def delivery_states(state_dir: Path) -> dict[tuple[int, str], str]:
    """(spool id, destination) → delivery state."""
    return {
        (int(r["capture_id"]), str(r["destination"])): str(r["state"])
        for r in delivery_rows(state_dir)
    }


def by_class(state_dir: Path) -> dict[str, list[sqlite3.Row]]:
    """The captures, by device class."""
    found: dict[str, list[sqlite3.Row]] = {}
    for row in ledger_rows(state_dir):
        kind = "confocal" if row["sop_class_uid"] != DERMOSCOPIC else "dermoscopic"
        found.setdefault(kind, []).append(row)
    return found


def test_routes_send_dermoscopy_to_both_confocal_to_the_pacs_and_purge_waits_for_both(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
    confocal_sim: Callable[..., ConfocalSimulator],
) -> None:
    research_port = free_port()
    routes = """
[spool]
keep_days = 0.00002
purge_interval = 1

[[routes]]
match = { device_class = "dermatoscope" }
to = ["pacs", "research"]

[[routes]]
match = { device_class = "confocal-microscope" }
to = ["pacs"]
"""
    config = gateway_config(
        tmp_path,
        pacs_port=orthanc.dicom_port,
        commit_via=orthanc,
        extra_destination=research(research_port) + routes,
        devices=SCOPE.format(link=tmp_path / "ttyDERM0") + RCM.format(socket=tmp_path / "rcm.sock"),
    )
    stacks = confocal_sim("--stacks", "1", "--frames", "3", "--size", "64x64")
    scope = simulator_factory("--captures", "2", "--interval", "0.2")
    gateway = gateway_factory(config)
    assert scope.wait(120) == 0, gateway.log()
    assert stacks.wait(120) == 0, gateway.log()
    state_dir = tmp_path / "state"

    # The research archive is down: the PACS confirms everything; the confocal stack
    # (routed to the PACS only) is confirmed and purged, the dermoscopic captures wait.
    def pacs_confirmed_all() -> bool:
        found = by_class(state_dir)
        return (
            len(found.get("dermoscopic", [])) == 2
            and [r["state"] for r in found.get("confocal", [])] == ["PURGED"]
            and all(
                delivery_states(state_dir).get((r["id"], "pacs")) == "COMMITTED"
                for r in found["dermoscopic"]
            )
        )

    wait_for(pacs_confirmed_all, 120, "the PACS confirms all, the stack is purged")
    found = by_class(state_dir)
    confocal = found["confocal"][0]
    assert {d for (i, d) in delivery_states(state_dir) if i == confocal["id"]} == {"pacs"}
    assert orthanc.count_instances() == 3
    for row in found["dermoscopic"]:
        assert row["state"] == "WRAPPED", "research has not confirmed it: not COMMITTED"
        assert delivery_states(state_dir)[(row["id"], "research")] == "PENDING"
        assert (state_dir / "spool" / "dicom" / row["dicom_name"]).exists(), "kept for research"
    archive = research_orthanc(tmp_path, orthanc, research_port)
    archive.start()
    try:
        wait_for(lambda: states(state_dir) == ["PURGED"] * 3, 120, "all confirmed and purged")
        for row in found["dermoscopic"]:
            assert len(archive.find_instances(row["sop_instance_uid"])) == 1
        assert archive.find_instances(confocal["sop_instance_uid"]) == []
        assert archive.count_instances() == 2
        assert set(delivery_states(state_dir).values()) == {"COMMITTED"}
        assert gateway.stop() == 0
    finally:
        archive.stop()


async def _flag_sensitive(base: str, spool_id: int) -> str:
    """Flag a capture sensitive on the page as a technician does; return the answer."""
    async with cookie_client() as session:
        await login(session, base, "tech", PASSWORD)
        async with session.get(f"{base}/spool/{spool_id}") as page:
            token = csrf_of(await page.text())
        async with session.post(
            f"{base}/spool/{spool_id}/sensitive", data={"csrf": token, "sensitive": "1"}
        ) as answer:
            assert answer.status == 200
            return await answer.text()


def test_a_capture_flagged_sensitive_after_arrival_never_reaches_research(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    research_port, web_port = free_port(), free_port()
    routes = f"""
[web]
listen = "127.0.0.1:{web_port}"

[[routes]]
to = ["pacs"]

[[routes]]
match = {{ sensitive = false }}
to = ["research"]
"""
    config = gateway_config(
        tmp_path,
        pacs_port=orthanc.dicom_port,
        commit_via=orthanc,
        extra_destination=research(research_port) + routes,
    )
    user_add(config, "tech", PASSWORD)
    sim = simulator_factory("--captures", "2", "--interval", "0.2")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0, gateway.log()
    state_dir = tmp_path / "state"
    wait_for(
        lambda: (
            [d for (_, d), s in delivery_states(state_dir).items() if s == "COMMITTED"]
            == ["pacs", "pacs"]
        ),
        120,
        "the PACS confirms both; research is down",
    )
    flagged, plain = (int(r["id"]) for r in ledger_rows(state_dir))
    text = asyncio.run(_flag_sensitive(f"http://127.0.0.1:{web_port}", flagged))
    assert "now flagged as sensitive" in text
    assert (flagged, "research") not in delivery_states(state_dir), "withdrawn at once"
    assert f"spool id {flagged}: no longer sent to research" in gateway.log()
    archive = research_orthanc(tmp_path, orthanc, research_port)
    archive.start()
    try:
        wait_for(lambda: states(state_dir) == ["COMMITTED"] * 2, 120, "both COMMITTED")
        rows = {int(r["id"]): r for r in ledger_rows(state_dir)}
        assert len(archive.find_instances(rows[plain]["sop_instance_uid"])) == 1
        assert archive.find_instances(rows[flagged]["sop_instance_uid"]) == []
        assert archive.count_instances() == 1
        assert len(orthanc.find_instances(rows[flagged]["sop_instance_uid"])) == 1
        assert gateway.stop() == 0
    finally:
        archive.stop()


def test_a_high_priority_capture_jumps_the_backlog(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    """The urgent capture is the oldest and the most tried: without its route's
    priority it would go last (fresh captures go first)."""
    pacs.start()
    pacs.reject_associations(True)
    urgent_link, bulk_link = tmp_path / "ttyURGENT", tmp_path / "ttyBULK"
    devices = SCOPE.format(link=urgent_link).replace('"scope"', '"urgent"') + SCOPE.format(
        link=bulk_link
    )
    routes = """
associations = 1

[[routes]]
to = ["pacs"]

[[routes]]
match = { device = "urgent" }
to = ["pacs"]
priority = "high"
"""
    config = gateway_config(
        tmp_path,
        pacs_port=pacs.port,
        pacs_ae="MISBEHAVE",
        extra_destination=routes,
        devices=devices,
    )
    gateway = gateway_factory(config)
    urgent = simulator_factory("--captures", "1", "--seed", "7", link=urgent_link)
    assert urgent.wait(120) == 0, gateway.log()
    state_dir = tmp_path / "state"
    wait_for(
        lambda: bool(delivery_rows(state_dir)) and delivery_rows(state_dir)[0]["attempts"] >= 2,
        60,
        "the urgent capture tried while the PACS refuses",
    )
    bulk = simulator_factory("--captures", "4", "--interval", "0.1", "--seed", "9", link=bulk_link)
    assert bulk.wait(120) == 0, gateway.log()
    wait_for(lambda: len(ledger_rows(state_dir)) == 5, 60, "the backlog recorded")
    first = ledger_rows(state_dir)[0]
    assert first["device_name"] == "urgent"
    shown = run_cli("spool", "show", str(first["id"]), "--config", str(config))
    assert re.search(r"Priority\s+high", shown.stdout), shown.stdout
    pacs.reject_associations(False)
    wait_for(lambda: states(state_dir) == ["SENT"] * 5, 90, "the backlog delivered")
    assert pacs.received[0] == first["sop_instance_uid"], "the urgent capture went first"
    assert gateway.stop() == 0


def test_a_destination_added_later_gets_the_captures_on_disk_and_a_removed_one_stays_visible(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    state_dir = tmp_path / "state"
    pacs_only = gateway_config(
        tmp_path, pacs_port=orthanc.dicom_port, commit_via=orthanc, spool=KEEP_CONFIRMED
    )
    text_pacs_only = pacs_only.read_text(encoding="utf-8")
    sim = simulator_factory("--captures", "2", "--interval", "0.2")
    gateway = gateway_factory(pacs_only)
    assert sim.wait(120) == 0, gateway.log()
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 2, 120, "both COMMITTED by the PACS")
    assert gateway.stop() == 0

    # The research archive joins: the captures still in the spool go there too.
    research_port = free_port()
    with_research = gateway_config(
        tmp_path,
        pacs_port=orthanc.dicom_port,
        commit_via=orthanc,
        extra_destination=research(research_port),
        spool=KEEP_CONFIRMED,
    )
    archive = research_orthanc(tmp_path, orthanc, research_port)
    archive.start()
    try:
        gateway = gateway_factory(with_research)
        wait_for(lambda: archive.count_instances() == 2, 120, "research receives the backlog")
        wait_for(lambda: states(state_dir) == ["COMMITTED"] * 2, 120, "confirmed by both")
        assert "2 capture(s) still in the spool are now also routed to research" in gateway.log()
        assert gateway.stop() == 0
    finally:
        archive.stop()

    # Research is down while a third capture arrives, then taken out of the file.
    sim = simulator_factory("--captures", "1", "--seed", "5")
    gateway = gateway_factory(with_research)
    assert sim.wait(120) == 0, gateway.log()
    wait_for(lambda: len(ledger_rows(state_dir)) == 3, 60, "the third capture")
    third = int(ledger_rows(state_dir)[2]["id"])
    wait_for(
        lambda: delivery_states(state_dir).get((third, "pacs")) == "COMMITTED", 120, "PACS confirms"
    )
    assert gateway.stop() == 0
    pacs_only.write_text(text_pacs_only, encoding="utf-8")
    gateway = gateway_factory(pacs_only)
    wait_for(lambda: "destination research was removed" in gateway.log(), 60, "the warning")
    listing = run_cli("spool", "list", "--config", str(pacs_only))
    line = next(x for x in listing.stdout.splitlines() if x.split()[0] == str(third))
    assert "destination removed: research" in line
    shown = run_cli("spool", "show", str(third), "--config", str(pacs_only))
    assert "Destination research (destination removed)" in shown.stdout
    assert delivery_states(state_dir)[(third, "research")] == "PENDING", "never dropped"
    assert states(state_dir)[2] == "WRAPPED", "never COMMITTED, so never purged"

    # The clinic retires the archive for good: a technician lets go of it, explicitly.
    asked = run_cli("spool", "forget-destination", "research", "--config", str(pacs_only))
    assert "1 capture(s) wait for research" in asked.stdout
    assert "--yes" in asked.stdout
    assert delivery_states(state_dir)[(third, "research")] == "PENDING", "not without --yes"
    done = run_cli("spool", "forget-destination", "research", "--yes", "--config", str(pacs_only))
    assert done.returncode == 0, done.stderr
    assert f"1 delivery(ies) dropped (spool ids {third})" in done.stdout
    assert (third, "research") not in delivery_states(state_dir)
    assert states(state_dir) == ["COMMITTED"] * 3, "confirmed by every destination left"
    again = run_cli("spool", "forget-destination", "pacs", "--yes", "--config", str(pacs_only))
    assert again.returncode == 4
    assert "is configured" in again.stderr
    assert gateway.stop() == 0


def test_a_capture_no_route_sends_anywhere_is_set_aside_then_sent_once_a_route_matches(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    pacs.start()
    only_confocal = """
[[routes]]
match = { device_class = "confocal-microscope" }
to = ["pacs"]
"""
    config = gateway_config(
        tmp_path, pacs_port=pacs.port, pacs_ae="MISBEHAVE", extra_destination=only_confocal
    )
    sim = simulator_factory("--captures", "1")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0, "acknowledged: kept even though no route sends it"
    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["QUARANTINED"], 60, "set aside for want of a route")
    row = ledger_rows(state_dir)[0]
    assert row["reason"].startswith("no route sends it anywhere")
    assert "device class dermatoscope" in row["reason"]
    assert (state_dir / "spool" / "dicom" / row["dicom_name"]).exists()
    listing = run_cli("spool", "list", "--config", str(config))
    assert "no route sends it anywhere" in listing.stdout
    assert f"spool id {row['id']} set aside: no [[routes]] entry sends it anywhere" in gateway.log()
    assert pacs.received == []
    assert gateway.stop() == 0
    text = config.read_text(encoding="utf-8").replace("confocal-microscope", "dermatoscope")
    config.write_text(text, encoding="utf-8")
    gateway = gateway_factory(config)
    wait_for(lambda: states(state_dir) == ["SENT"], 60, "routed and sent after the fix")
    assert pacs.received == [row["sop_instance_uid"]]
    assert "1 capture(s) set aside for want of a route now have one" in gateway.log()
    assert gateway.stop() == 0
