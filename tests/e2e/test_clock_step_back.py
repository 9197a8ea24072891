"""A wall clock stepped back does not postpone retries by the size of the step.

The box's clock going back one day (a Raspberry Pi without a real-time clock boots
with the time it last saved, then NTP corrects it; or an operator sets it) leaves
every time the ledger stored one day ahead of the new "now". The test gives the
ledger exactly that, between two runs of the real service, with a real pynetdicom
PACS: the retry and the commitment re-request happen within their configured
bounds, not a day later.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from gateway.demo.local_orthanc import free_port
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.peers import MisbehavingPacs
from tests.support.simulator import SimulatorProcess
from tests.support.state import delivery_rows, ledger_rows, states
from tests.support.waiting import wait_for

DAY = 86_400.0


def _step_back_one_day(state_dir: Path, *statements: str) -> None:
    """What the clock stepping back a day does to the ledger's stored times."""
    conn = sqlite3.connect(state_dir / "ledger.sqlite3")
    try:
        with conn:
            for sql in statements:
                conn.execute(sql, (DAY,))
    finally:
        conn.close()


def test_a_retry_scheduled_before_the_clock_went_back_a_day_is_not_a_day_late(
    tmp_path: Path,
    pacs: MisbehavingPacs,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    pacs.start()
    pacs.reject_associations(True)
    config = gateway_config(
        tmp_path,
        pacs_port=pacs.port,
        pacs_ae="MISBEHAVE",
        retry_initial=0.5,
        retry_max=2.0,
        # The circuit breaker's probe would make everything due at once: keep it shut.
        extra_destination="breaker_threshold = 1000",
    )
    sim = simulator_factory("--captures", "1")
    gateway = gateway_factory(config)
    assert sim.wait(120) == 0
    state_dir = tmp_path / "state"
    wait_for(
        lambda: ledger_rows(state_dir) and delivery_rows(state_dir)[0]["attempts"] >= 2,
        60,
        "retries while the PACS refuses",
    )
    assert gateway.stop() == 0
    _step_back_one_day(state_dir, "UPDATE deliveries SET next_attempt_at = next_attempt_at + ?")
    pacs.reject_associations(False)
    restarted = gateway_factory(config)
    wait_for(lambda: states(state_dir) == ["SENT"], 60, "the retry (due within retry_max)")
    assert pacs.received == [ledger_rows(state_dir)[0]["sop_instance_uid"]]
    assert "the clock went back" in restarted.log()
    assert restarted.stop() == 0


def test_a_commitment_request_made_before_the_clock_went_back_is_asked_again_in_time(
    tmp_path: Path,
    gateway_factory: Callable[[Path], GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    pacs = MisbehavingPacs(script=[], report_to=free_port(), commit_script=["silent", "commit"])
    pacs.start()
    try:
        config = gateway_config(
            tmp_path,
            pacs_port=pacs.port,
            pacs_ae="MISBEHAVE",
            listen_port=pacs.report_to,
            commitment_timeout=3.0,
        )
        sim = simulator_factory("--captures", "1")
        gateway = gateway_factory(config)
        assert sim.wait(120) == 0
        state_dir = tmp_path / "state"
        wait_for(lambda: len(pacs.actions) == 1, 60, "a first commitment request (unanswered)")
        assert gateway.stop() == 0
        assert states(state_dir) == ["SENT"]
        _step_back_one_day(
            state_dir,
            "UPDATE commitments SET created_epoch = created_epoch + ?",
            "UPDATE commitments SET requested_epoch = requested_epoch + ?",
            "UPDATE deliveries SET sent_epoch = sent_epoch + ?",
        )
        restarted = gateway_factory(config)
        wait_for(
            lambda: states(state_dir) == ["COMMITTED"],
            60,
            "asked again after commitment_timeout, not a day later",
        )
        assert len(pacs.actions) == 2
        assert len(pacs.received) == 1, "asking again does not send again"
        assert restarted.stop() == 0
    finally:
        pacs.stop()
