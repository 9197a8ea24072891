"""STOW-RS forwarding and read-back against a store that answers as cloud stores do.

The real forwarder, read-back, ledger and spool run in-process; the peer is a real
HTTP server (:class:`tests.support.dicomweb.ScriptedStore`) that answers 409 with one
instance stored, 429 with Retry-After, 413, leaves an instance out of its answer,
loses one it listed, or says "already stored". Each outcome is judged per instance
and every capture ends in the store exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.core.config import DicomwebDestination
from gateway.core.uids import new_uid
from gateway.forward.bucket import bucket_for
from gateway.forward.forwarder import Forwarder
from gateway.forward.readback import ReadBack
from gateway.forward.stow import StowSender
from gateway.spool.ledger import Ledger
from tests.support.dicomweb import ScriptedStore, add_wrapped, wait_until
from tests.support.spool import Spool


def web_destination(store: ScriptedStore, **keys: Any) -> DicomwebDestination:
    """The destination "pacs" (the spool fixture's name) as a DICOMweb store."""
    settings: dict[str, Any] = {
        "name": "pacs",
        "kind": "dicomweb",
        "url": store.url,
        "retry_initial": 0.1,
        "retry_max": 0.5,
        "confirm_timeout": 1.0,
        "request_timeout": 20.0,
    }
    settings.update(keys)
    return DicomwebDestination.model_validate(settings)


@contextlib.asynccontextmanager
async def delivering(spool: Spool, destination: DicomwebDestination) -> AsyncIterator[Forwarder]:
    """Run the forwarder and the read-back of ``destination`` over the spool's ledger."""
    ledger = Ledger(spool.dirs.root.parent / "ledger.sqlite3")
    ledger.start()
    sender = StowSender(destination, bucket=bucket_for(destination.max_mbps))
    woken: list[Forwarder] = []
    readback = ReadBack(ledger, destination, sender, lambda: woken[0].notify())
    forwarder = Forwarder(
        ledger, spool.dirs, "DERMGATE", destination, readback.notify, sender=sender
    )
    woken.append(forwarder)
    tasks = [
        asyncio.create_task(forwarder.run(lambda: None)),
        asyncio.create_task(readback.run(lambda: None)),
    ]
    try:
        yield forwarder
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        ledger.close()


def state(spool: Spool, spool_id: int) -> str:
    return str(spool.capture(spool_id)["state"])


def all_in(spool: Spool, ids: list[int], wanted: str) -> bool:
    return all(state(spool, i) == wanted for i in ids)


async def test_one_request_per_study_with_type_and_length_then_committed_by_read_back(
    spool: Spool, scripted_store: ScriptedStore
) -> None:
    study_a, study_b = new_uid(), new_uid()
    added = [add_wrapped(spool, study_a) for _ in range(3)] + [add_wrapped(spool, study_b)]
    ids = [spool_id for spool_id, _, _ in added]
    async with delivering(spool, web_destination(scripted_store, associations=1)):
        await wait_until(lambda: all_in(spool, ids, "COMMITTED"), 20, "read-back")
    assert sorted(len(p.uids) for p in scripted_store.posts) == [1, 3], "one request per study"
    for post in scripted_store.posts:
        assert 'type="application/dicom"' in post.content_type
        assert post.content_length is not None, "sent with a Content-Length, not chunked"
    assert dict(scripted_store.stored) == {uid: 1 for _, uid, _ in added}, "exactly once"
    assert scripted_store.qidos >= 2, "read back per study"
    assert all(spool.delivery(i)["committed_at"] for i in ids)


async def test_a_409_with_one_instance_stored_sends_only_the_other_again(
    spool: Spool, scripted_store: ScriptedStore
) -> None:
    study = new_uid()
    (first, uid1, _), (second, uid2, _) = add_wrapped(spool, study), add_wrapped(spool, study)
    scripted_store.script = ["partial409"]
    async with delivering(spool, web_destination(scripted_store, associations=1)):
        await wait_until(lambda: all_in(spool, [first, second], "COMMITTED"), 20, "delivery")
    assert dict(scripted_store.stored) == {uid1: 1, uid2: 1}
    attempts = sorted(spool.delivery(i)["attempts"] for i in (first, second))
    assert attempts == [1, 2], "the stored one is not sent again; the failed one is"


async def test_an_instance_missing_from_the_answer_is_not_delivered_and_is_sent_again(
    spool: Spool, scripted_store: ScriptedStore
) -> None:
    study = new_uid()
    added = [add_wrapped(spool, study) for _ in range(2)]
    ids = [spool_id for spool_id, _, _ in added]
    scripted_store.script = ["omit"]
    async with delivering(spool, web_destination(scripted_store, associations=1)):
        await wait_until(lambda: all_in(spool, ids, "COMMITTED"), 20, "delivery")
    assert [len(p.uids) for p in scripted_store.posts] == [2, 1]
    assert dict(scripted_store.stored) == {uid: 1 for _, uid, _ in added}


async def test_429_waits_for_retry_after_before_sending_again(
    spool: Spool, scripted_store: ScriptedStore
) -> None:
    spool_id, uid, _ = add_wrapped(spool, new_uid())
    scripted_store.script = ["429"]
    scripted_store.retry_after = "2"
    destination = web_destination(scripted_store, retry_max=5.0)
    async with delivering(spool, destination):
        await wait_until(lambda: state(spool, spool_id) == "COMMITTED", 20, "delivery")
    first, second = scripted_store.posts
    assert second.at - first.at >= 1.9, "Retry-After: 2 honoured (backoff alone is 0.1 s)"
    assert dict(scripted_store.stored) == {uid: 1}


async def test_413_splits_the_request_and_a_single_instance_too_large_is_quarantined(
    spool: Spool, scripted_store: ScriptedStore
) -> None:
    study = new_uid()
    added = [add_wrapped(spool, study) for _ in range(3)]
    ids = [spool_id for spool_id, _, _ in added]
    scripted_store.max_parts = 1
    async with delivering(spool, web_destination(scripted_store, associations=1)):
        await wait_until(lambda: all_in(spool, ids, "COMMITTED"), 20, "delivery one by one")
    assert [len(p.uids) for p in scripted_store.posts] == [3, 1, 1, 1]

    lone, _, _ = add_wrapped(spool, new_uid())
    scripted_store.max_parts = 0
    scripted_store.posts.clear()
    async with delivering(spool, web_destination(scripted_store)):
        await wait_until(lambda: state(spool, lone) == "QUARANTINED", 20, "quarantine")
        await asyncio.sleep(1.0)  # retry_max is 0.5 s: a retry would have happened by now
    assert len(scripted_store.posts) == 1, "not retried blindly"
    delivery = spool.delivery(lone)
    assert delivery["error_code"] == "too_large"
    assert "smaller max_request_mb" in delivery["last_error"]


async def test_an_instance_the_store_lost_is_sent_again_after_the_read_back_misses_it(
    spool: Spool, scripted_store: ScriptedStore
) -> None:
    spool_id, uid, _ = add_wrapped(spool, new_uid())
    scripted_store.script = ["lose"]
    async with delivering(spool, web_destination(scripted_store, confirm_timeout=1.0)):
        await wait_until(lambda: state(spool, spool_id) == "COMMITTED", 30, "re-send")
    assert len(scripted_store.posts) == 2
    assert dict(scripted_store.stored) == {uid: 1}
    assert spool.delivery(spool_id)["commit_failures"] == 1


async def test_already_stored_counts_once_read_back_confirms_it_even_when_trusting_answers(
    spool: Spool, scripted_store: ScriptedStore
) -> None:
    plain, _, _ = add_wrapped(spool, new_uid())
    destination = web_destination(scripted_store, confirm="response")
    async with delivering(spool, destination):
        await wait_until(lambda: state(spool, plain) == "COMMITTED", 20, "delivery")
    assert scripted_store.qidos == 0, '"response": the answer itself confirms'

    duplicate, _, _ = add_wrapped(spool, new_uid())
    scripted_store.script = ["dup"]
    async with delivering(spool, destination):
        await wait_until(lambda: state(spool, duplicate) == "COMMITTED", 20, "read-back")
    assert scripted_store.qidos >= 1, "45070 is confirmed by reading back"
    assert len(scripted_store.posts) == 2, "not sent again"


async def test_401_is_asked_once_more_then_a_plain_retryable_failure(
    spool: Spool, scripted_store: ScriptedStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.forward.stow")
    spool_id, uid, _ = add_wrapped(spool, new_uid())
    scripted_store.script = ["401", "401", "401", "401"]
    async with delivering(spool, web_destination(scripted_store, retry_initial=0.5)) as forwarder:
        await wait_until(lambda: len(scripted_store.posts) >= 2, 20, "a second try")
        await wait_until(lambda: spool.delivery(spool_id)["attempts"] >= 1, 20, "recorded")
        delivery = spool.delivery(spool_id)
        assert delivery["state"] == "PENDING", "credentials are not a reason to give up"
        assert delivery["error_code"] == "auth_refused"
        assert forwarder.last_error is not None
        assert forwarder.last_error.message.endswith("(HTTP 401)")
        await wait_until(lambda: state(spool, spool_id) == "COMMITTED", 20, "delivery")
    assert dict(scripted_store.stored) == {uid: 1}
    # The refusal is a change of state: one warning when it starts, one line when it ends.
    said = [
        (r.levelname, r.getMessage()) for r in caplog.records if "credentials" in r.getMessage()
    ]
    assert [level for level, _ in said] == ["WARNING", "INFO"], said


async def test_an_unreachable_store_opens_the_circuit_and_a_qido_probe_restores_it(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    store = ScriptedStore()  # not listening yet: connection refused
    spool_id, uid, _ = add_wrapped(spool, new_uid())
    destination = web_destination(store, breaker_threshold=1, retry_initial=30.0, retry_max=60.0)
    caplog.set_level(logging.INFO, logger="gateway.forward.forwarder")
    async with delivering(spool, destination) as forwarder:
        await wait_until(lambda: forwarder.circuit_open, 20, "the circuit to open")
        delivery = spool.delivery(spool_id)
        assert delivery["error_code"] == "unreachable"
        assert forwarder.reachable is False
        await store.start()
        try:
            # The delivery's own backoff is 30 s: only the probe can bring it back now.
            await wait_until(lambda: state(spool, spool_id) == "COMMITTED", 20, "restore")
        finally:
            await store.stop()
    assert "answers QIDO-RS again" in caplog.text
    assert dict(store.stored) == {uid: 1}


async def test_an_instance_never_listed_is_quarantined_after_confirm_max_failures(
    spool: Spool, scripted_store: ScriptedStore
) -> None:
    spool_id, _, path = add_wrapped(spool, new_uid())
    scripted_store.script = ["lose", "lose"]
    destination = web_destination(scripted_store, confirm_timeout=0.5, confirm_max_failures=2)
    async with delivering(spool, destination):
        await wait_until(lambda: state(spool, spool_id) == "QUARANTINED", 30, "quarantine")
    assert len(scripted_store.posts) == 2, "sent again once, then set aside"
    reason = str(spool.capture(spool_id)["reason"])
    assert "could not commit it 2 times" in reason
    assert "no such object instance" in reason
    assert path.exists(), "the local copy is kept"


async def test_after_a_restart_sent_instances_are_read_back_not_sent_again(
    spool: Spool, scripted_store: ScriptedStore
) -> None:
    study = new_uid()
    added = [add_wrapped(spool, study) for _ in range(2)]
    scripted_store.unlisted = True  # stored, but not yet listed (slow to index)
    async with delivering(spool, web_destination(scripted_store, confirm_timeout=60.0)):
        await wait_until(lambda: scripted_store.qidos >= 1, 20, "a first read-back")
    ids = [spool_id for spool_id, _, _ in added]
    assert all_in(spool, ids, "SENT")
    scripted_store.unlisted = False  # indexed while the gateway was stopped
    async with delivering(spool, web_destination(scripted_store, confirm_timeout=60.0)):
        await wait_until(lambda: all_in(spool, ids, "COMMITTED"), 20, "read-back after restart")
    sent = [uid for post in scripted_store.posts for uid in post.uids]
    assert sorted(sent) == sorted(uid for _, uid, _ in added), "nothing sent twice"


async def test_a_missing_ca_file_is_a_plain_retried_reason_not_a_crash(
    spool: Spool, scripted_store: ScriptedStore, tmp_path: Path
) -> None:
    spool_id, _, _ = add_wrapped(spool, new_uid())
    missing = tmp_path / "no-such-ca.pem"
    # Checked at load (config refuses it); here it went missing after the start.
    destination = web_destination(scripted_store).model_copy(update={"tls_ca": missing})
    error = await StowSender(destination).probe()
    assert error is not None
    assert error.code == "auth_unavailable"
    assert str(missing) in error.detail
    async with delivering(spool, destination):
        await wait_until(lambda: spool.delivery(spool_id)["attempts"] >= 1, 20, "an attempt")
    delivery = spool.delivery(spool_id)
    assert delivery["state"] == "PENDING"
    assert delivery["error_code"] == "auth_unavailable"
    assert scripted_store.posts == [], "nothing is sent without the CA it was told to trust"


async def test_400_quarantines_only_the_instance_at_fault_and_finds_it_alone(
    spool: Spool, scripted_store: ScriptedStore
) -> None:
    study = new_uid()
    added = [add_wrapped(spool, study) for _ in range(4)]
    bad = {added[1][1], added[3][1]}
    scripted_store.refuse = set(bad)
    async with delivering(spool, web_destination(scripted_store, associations=1)):
        await wait_until(
            lambda: all(
                state(spool, i) == ("QUARANTINED" if uid in bad else "COMMITTED")
                for i, uid, _ in added
            ),
            20,
            "the good ones delivered, the bad ones set aside",
        )
        await asyncio.sleep(1.0)  # retry_max is 0.5 s: a blind retry would show by now
    assert [len(p.uids) for p in scripted_store.posts] == [4, 1, 1], "the two alone, once"
    assert set(scripted_store.stored) == {uid for _, uid, _ in added} - bad
    for spool_id, uid, _ in added:
        if uid in bad:
            delivery = spool.delivery(spool_id)
            assert delivery["error_code"] == "request_refused"
            assert "HTTP 400" in delivery["last_error"]


async def test_max_mbps_paces_a_stow_rs_body(spool: Spool, scripted_store: ScriptedStore) -> None:
    """``max_mbps`` holds for DICOMweb stores too: 600 kB at 1 Mbit/s (125 kB/s, a
    64 KiB burst) cannot arrive in less than about 4.3 s (a lower bound only)."""
    spool_id, _, _ = add_wrapped(spool, new_uid(), size=600_000)
    started = time.monotonic()
    async with delivering(spool, web_destination(scripted_store, max_mbps=1.0)):
        await wait_until(lambda: state(spool, spool_id) == "COMMITTED", 60, "committed")
    assert time.monotonic() - started >= (600_000 - 65_536) / 125_000 * 0.95
