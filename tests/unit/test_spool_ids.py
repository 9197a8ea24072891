"""Spool ids are never handed out twice, even across a lost ledger.

A capture without a known patient goes to the PACS as ``TMP-<gateway id>-<spool id>``.
Before, ``dermgate spool rebuild`` numbered the rebuilt rows afresh from 1: ``spool
show N`` no longer found the capture whose Patient ID says N, and new captures took
spool ids that earlier captures (purged since, or rebuilt under another number) had
already carried to the PACS, which filed two people's images under one patient.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.patient import temporary_patient, temporary_spool_id
from gateway.spool.spool_ids import (
    SpoolIdCounter,
    SpoolIdMarkDamaged,
    read_high_water,
    write_high_water,
)

GATEWAY_ID = "test-box-01"  # gateway_config's and write_config's


# --------------------------------------------------------------------------- the mark


def test_ids_are_reserved_in_blocks_one_write_per_block(tmp_path: Path) -> None:
    mark = tmp_path / "spool-ids.next"
    counter = SpoolIdCounter.open(mark, ledger_highest=0, block=1000)
    assert read_high_water(mark) == 1, "a new box records its mark at once"
    writes = 0
    inode = mark.stat().st_ino
    for expected in range(1, 2002):
        assert counter.take() == expected
        assert read_high_water(mark) == ((expected - 1) // 1000 + 1) * 1000 + 1
        if mark.stat().st_ino != inode:  # every write renames a new file into place
            writes += 1
            inode = mark.stat().st_ino
    assert writes == 3, "ids 1, 1001 and 2001 each moved the mark one block ahead"


def test_a_clean_stop_records_the_exact_next_id(tmp_path: Path) -> None:
    mark = tmp_path / "spool-ids.next"
    counter = SpoolIdCounter.open(mark, ledger_highest=0)
    assert [counter.take() for _ in range(3)] == [1, 2, 3]
    counter.close()
    assert read_high_water(mark) == 4
    assert SpoolIdCounter.open(mark, ledger_highest=3).take() == 4


def test_a_missing_mark_starts_above_the_ledger_and_is_written_at_once(tmp_path: Path) -> None:
    mark = tmp_path / "spool-ids.next"
    counter = SpoolIdCounter.open(mark, ledger_highest=41)
    assert read_high_water(mark) == 42
    assert counter.take() == 42


def test_a_ledger_that_lost_rows_cannot_pull_ids_below_the_mark(tmp_path: Path) -> None:
    mark = tmp_path / "spool-ids.next"
    write_high_water(mark, 5000)
    assert SpoolIdCounter.open(mark, ledger_highest=0).take() == 5000
    assert SpoolIdCounter.open(mark, ledger_highest=9000).take() == 9001


@pytest.mark.parametrize("content", [b"", b"12x\n", b"\x00\x00\x00\x00", b"-5\n", b"0\n"])
def test_a_damaged_mark_is_never_guessed_past(tmp_path: Path, content: bytes) -> None:
    mark = tmp_path / "spool-ids.next"
    mark.write_bytes(content)
    with pytest.raises(SpoolIdMarkDamaged) as refused:
        SpoolIdCounter.open(mark, ledger_highest=7)
    assert str(mark) in str(refused.value)
    assert mark.read_bytes() == content


def test_temporary_ids_are_recognised_only_as_this_gateway_writes_them() -> None:
    long_id = "a-very-long-gateway-identifier-that-does-not-fit-into-LO-at-all"
    for gateway_id in (GATEWAY_ID, long_id):
        for spool_id in (1, 42, 2**62 - 1):
            patient = temporary_patient(gateway_id, spool_id)
            assert (
                temporary_spool_id(patient.patient_id, patient.issuer_of_patient_id, gateway_id)
                == spool_id
            )
    issuer = f"{GATEWAY_ID}-TEMP"
    for patient_id, issuer_given in (
        (f"TMP-{GATEWAY_ID}-7", "other-box-TEMP"),  # another issuer
        ("TMP-other-box-7", issuer),  # another gateway's
        (f"TMP-{GATEWAY_ID}-007", issuer),  # never written so
        (f"TMP-{GATEWAY_ID}-", issuer),
        (f"TMP-{GATEWAY_ID}-٣", issuer),  # a non-ASCII digit
        ("PID-4711", ""),
    ):
        assert temporary_spool_id(patient_id, issuer_given, GATEWAY_ID) is None


# --------------------------------------------------------------------------- rebuild


# --------------------------------------------------------------------------- end to end
