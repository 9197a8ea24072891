"""A disk filled to the last byte while captures are being forwarded.

The state folder sits on its own small tmpfs (the tests run as root, as CI does),
so ENOSPC and SQLite's "database or disk is full" come from the kernel. The gateway
runs as a real ``dermgate run`` under the descriptor limit systemd gives a service,
delivering to a real Orthanc with storage commitment.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.demo.local_orthanc import OrthancProcess
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.simulator import SimulatorProcess
from tests.support.state import ledger_rows, states
from tests.support.waiting import wait_for

MIB = 1024 * 1024
CAPTURES = 5


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill_to_the_last_byte(path: Path) -> None:
    """Append to ``path`` until the filesystem has not one byte left (ENOSPC)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (MIB, 4096, 1):
            block = b"\0" * chunk
            while True:
                try:
                    os.write(fd, block)
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    assert shutil.disk_usage(path.parent).free == 0


def running_until(gateway: GatewayProcess, predicate: Callable[[], bool], what: str) -> None:
    """Wait for ``predicate``; fail at once if the service stopped meanwhile."""
    assert gateway.proc is not None
    proc = gateway.proc
    wait_for(lambda: proc.poll() is not None or predicate(), 120, what)
    assert proc.poll() is None, f"the gateway stopped on a full disk:\n{gateway.log()[-4000:]}"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    yield started
    for gw in started:
        if gw.proc is not None and gw.proc.poll() is None:
            gw.proc.kill()
            gw.proc.wait()
        gw.close_logs()


def _full_while_forwarding(
    tmp_path: Path,
    state_dir: Path,
    orthanc: OrthancProcess,
    service: list[GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> GatewayProcess:
    """Captures WRAPPED and retried (PACS down), then a disk full to the last byte,
    twice: the second time takes the room the ledger freed for itself."""
    config = gateway_config(
        tmp_path,
        pacs_port=orthanc.dicom_port,
        commit_via=orthanc,
        retry_initial=0.2,
        retry_max=1.0,
        commitment_timeout=5.0,
    )
    text = config.read_text().replace(str(tmp_path / "state"), str(state_dir))
    config.write_text(text + "\n[spool]\nreserve_mb = 16\n")
    orthanc.stop()  # the PACS is down while the captures pile up: WRAPPED, retried
    gateway = GatewayProcess(config, tmp_path / "gateway.log")
    service.append(gateway)
    gateway.start()
    sim = simulator_factory("--captures", str(CAPTURES), "--interval", "0.1")
    assert sim.wait(120) == 0, gateway.log()
    wait_for(lambda: states(state_dir) == ["WRAPPED"] * CAPTURES, 60, "the captures wrapped")
    wait_for(lambda: "destination pacs unavailable" in gateway.log(), 60, "failed attempts")

    filler = state_dir.parent / "filler"
    fill_to_the_last_byte(filler)  # something else fills the disk
    running_until(gateway, lambda: "DISK FULL" in gateway.log(), "the disk_full alarm")
    running_until(gateway, lambda: "released its reserve" in gateway.log(), "the reserve used")
    fill_to_the_last_byte(filler)  # ...and takes what the ledger freed
    running_until(gateway, lambda: "the ledger cannot write" in gateway.log(), "writes waiting")
    return gateway


def _committed_once_each(state_dir: Path, orthanc: OrthancProcess) -> None:
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * CAPTURES, 120, "every capture committed")
    sop_uids = [str(r["sop_instance_uid"]) for r in ledger_rows(state_dir)]
    assert len(set(sop_uids)) == CAPTURES
    for uid in sop_uids:
        assert len(orthanc.find_instances(uid)) == 1, "one instance per capture at the PACS"
    assert orthanc.count_instances() == CAPTURES, "nothing sent twice under another UID"


def test_a_disk_full_to_the_last_byte_pauses_delivery_and_resumes_by_itself(
    tmp_path: Path,
    small_disk: Path,
    orthanc: OrthancProcess,
    service: list[GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    state_dir = small_disk / "state"
    gateway = _full_while_forwarding(tmp_path, state_dir, orthanc, service, simulator_factory)
    orthanc.start()  # the PACS is back while the disk is still full
    assert gateway.proc is not None
    assert gateway.proc.poll() is None, "paused, not stopped"
    assert shutil.disk_usage(small_disk).free == 0
    (small_disk / "filler").unlink()  # space is back: everything resumes by itself
    _committed_once_each(state_dir, orthanc)
    running_until(gateway, lambda: "disk space is back" in gateway.log(), "the alarm cleared")
    assert "the ledger writes again" in gateway.log()
    assert (state_dir / ".reserve").exists(), "the ledger's reserve is made again"
    assert gateway.log().count("DISK FULL") == 1, "the alarm is raised once"
    assert gateway.stop() == 0


def test_a_stop_while_the_ledger_waits_for_space_ends_and_nothing_is_sent_twice(
    tmp_path: Path,
    small_disk: Path,
    orthanc: OrthancProcess,
    service: list[GatewayProcess],
    simulator_factory: Callable[..., SimulatorProcess],
) -> None:
    state_dir = small_disk / "state"
    gateway = _full_while_forwarding(tmp_path, state_dir, orthanc, service, simulator_factory)
    orthanc.start()
    assert gateway.stop() == 0, "a stop on a full disk ends cleanly"
    (small_disk / "filler").unlink()
    gateway.start()
    _committed_once_each(state_dir, orthanc)
    assert gateway.stop() == 0
