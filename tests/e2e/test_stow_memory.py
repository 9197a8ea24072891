"""STOW-RS of a 1 GiB object keeps ``dermgate run`` flat in memory (DESIGN §9).

The gateway streams the Part 10 file from disk into a ``multipart/related`` body
with a Content-Length; the peer is a store that reads the body in 64 KiB chunks
and hashes it (Orthanc itself holds a whole request in memory, ~3× its size, which
would measure Orthanc, not us). The service's peak resident set size (``VmHWM``)
with the 1 GiB capture is compared with its peak for a small one; the digest the
store computed must be the file's.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.core.uids import new_uid
from gateway.spool import ledger as db
from gateway.spool.dirs import SpoolDirs
from tests.support.dicomweb import ScriptedStore, add_wrapped, dicomweb_config, store_in_thread
from tests.support.gateway_process import GatewayProcess
from tests.support.spool import Spool
from tests.support.state import states
from tests.support.waiting import wait_for

LARGE_BYTES = 1 << 30
GROWTH_LIMIT_MB = 64


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """The gateway's state folder; its 1 GiB of files are removed afterwards."""
    folder = tmp_path / "state"
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def peak_with(
    tmp_path: Path,
    spool: Spool,
    store: ScriptedStore,
    gateway_factory: Callable[[Path], GatewayProcess],
    size: int | None,
) -> tuple[float, str, Path]:
    """Spool one capture of about ``size`` bytes, run the gateway until the store has
    confirmed it; return the service's peak RSS in MB, the part's digest, the file."""
    _, uid, path = add_wrapped(spool, new_uid(), destination="cloud", size=size)
    config = dicomweb_config(tmp_path, store.url, devices="")
    gateway = gateway_factory(config)
    wait_for(lambda: states(spool.dirs.root.parent)[-1] == "COMMITTED", 300, "delivery")
    peak = gateway.vm_hwm() / (1024 * 1024)
    assert gateway.stop() == 0
    [post] = [p for p in store.posts if p.uids == [uid]]
    return peak, post.digests[0], path


def test_a_1_gib_capture_goes_by_stow_rs_with_flat_memory_and_arrives_intact(
    tmp_path: Path, state_dir: Path, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    dirs = SpoolDirs(state_dir / "spool")
    dirs.create()
    conn = db.open_ledger(state_dir / "ledger.sqlite3")
    spool = Spool(tmp_path / "unused.toml", dirs, conn)
    try:
        with store_in_thread(ScriptedStore()) as store:
            small_peak, _, _ = peak_with(tmp_path, spool, store, gateway_factory, None)
            large_peak, digest, path = peak_with(
                tmp_path, spool, store, gateway_factory, LARGE_BYTES
            )
            assert store.stored, "the store kept both"
    finally:
        conn.close()
    assert path.stat().st_size > LARGE_BYTES
    assert digest == file_digest(path), "the body carried the file byte for byte"
    growth = large_peak - small_peak
    print(f"peak RSS: {small_peak:.0f} MB small, {large_peak:.0f} MB for 1 GiB")
    assert growth < GROWTH_LIMIT_MB, (
        f"peak RSS {large_peak:.0f} MB for 1 GiB against {small_peak:.0f} MB for a small one"
    )
