"""A photo dropped is taken as soon as its copy is closed, and committed without idling.

``dermgate run`` watches a real folder with settle and poll times far longer than
the waits below, and a real Orthanc with Storage Commitment stores the photos with a
commitment batch delay far longer too: what is checked is that the gateway does not
sit out those times when it knows better (the writer closed the file; nothing more is
due to be sent), and that a copy still open is never taken.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from drivers.photo_folder import simulator as camera
from gateway.demo.local_orthanc import OrthancProcess
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.photo_folder import photo_folder_toml
from tests.support.state import ledger_rows, states
from tests.support.waiting import wait_for

#: Far longer than any wait below: a photo taken or committed in time did not sit them out.
LONG = 120.0


def test_a_closed_photo_is_taken_at_once_an_open_one_never_and_both_are_committed_promptly(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    config = gateway_config(
        tmp_path,
        pacs_port=orthanc.dicom_port,
        commit_via=orthanc,
        devices=photo_folder_toml(folder, settle=LONG, poll=LONG, grace=LONG),
    )
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace("commitment_batch_delay = 0.2", f"commitment_batch_delay = {LONG}"),
        encoding="utf-8",
    )
    gateway = gateway_factory(config)
    gateway.wait_running()
    wait_for((folder / ".processed").is_dir, 30, "the driver watching the folder")

    first = camera.make_photo(1, width=640, height=480)
    (folder / "IMG_0001.JPG").write_bytes(first)  # a copy tool: written, closed
    wait_for((folder / ".processed" / "IMG_0001.JPG").exists, 30, "the closed photo taken")
    wait_for(lambda: states(tmp_path / "state") == ["COMMITTED"], 30, "committed promptly")

    second = camera.make_photo(2, width=640, height=480)
    half = len(second) // 2
    with open(folder / "IMG_0002.JPG", "wb") as copy:  # a copy that pauses, still open
        copy.write(second[:half])
        copy.flush()
        time.sleep(2.0)  # ten times closed_settle_seconds, far below settle_seconds
        assert (folder / "IMG_0002.JPG").exists(), "taken while its writer still had it open"
        copy.write(second[half:])
    wait_for((folder / ".processed" / "IMG_0002.JPG").exists, 30, "the photo once closed")
    wait_for(lambda: states(tmp_path / "state") == ["COMMITTED"] * 2, 30, "both committed")
    assert not list((folder / ".refused").iterdir())
    assert orthanc.count_instances() == 2
    sizes = sorted(row["raw_size"] for row in ledger_rows(tmp_path / "state"))
    assert sizes == sorted((len(first), len(second))), "each photo whole, once"
    assert gateway.stop() == 0
