"""Moving a running box to a new SD card: ``dermgate backup`` beside ``dermgate run``,
``dermgate restore``, and the service again, against a real Orthanc.

The camera (the photo-folder simulator) keeps dropping photos while the backup
runs. Checked: the restored ledger is the backup's snapshot (same captures, same
SOP Instance UIDs, same states); at the next start, captures whose files were not
in a spool-less backup show QUARANTINED, never vanish; logins and API tokens work;
Orthanc holds each SOP Instance UID once. Restore is refused while the service
runs. With ``--with-spool`` a capture not yet delivered when the backup was taken
is delivered after the restore, exactly once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tarfile
from collections.abc import Callable
from pathlib import Path

import aiohttp

from gateway.demo.local_orthanc import OrthancProcess, free_port
from tests.support.api import call, start_service, token_add
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.photo_folder import photo_folder_toml, start_camera
from tests.support.state import ledger_rows, states
from tests.support.waiting import wait_for
from tests.support.web import PASSWORD, cookie_client, login_status, run_cli, user_add

WAITING = ("HELD", "CAPTURED", "WRAPPED")


def _snapshot(tar_path: Path, into: Path) -> list[tuple[int, str, str]]:
    """(spool id, SOP Instance UID, state) of the ledger inside the backup."""
    with tarfile.open(tar_path) as tar:
        source = tar.extractfile("ledger.sqlite3")
        assert source is not None
        into.write_bytes(source.read())
    conn = sqlite3.connect(into)
    try:
        rows = conn.execute("SELECT id, sop_instance_uid, state FROM captures ORDER BY id")
        return [(int(i), str(u), str(s)) for i, u, s in rows]
    finally:
        conn.close()


def _rows(state_dir: Path) -> list[tuple[int, str, str]]:
    return [(int(r["id"]), r["sop_instance_uid"], r["state"]) for r in ledger_rows(state_dir)]


async def _logged_in_and_token_works(base: str, token: str) -> tuple[int, int]:
    async with cookie_client() as browser:
        login = await login_status(browser, base, "tech", PASSWORD)
    async with aiohttp.ClientSession() as s:
        answer = await call(s, "GET", f"{base}/api/v1/held", token=token)
    return login, answer.status


def test_a_running_box_moves_to_a_new_sd_card(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    web_port = free_port()
    devices = photo_folder_toml(folder, grace=1.0) + f'\n[web]\nlisten = "127.0.0.1:{web_port}"\n'
    config = gateway_config(
        tmp_path, pacs_port=orthanc.dicom_port, commit_via=orthanc, devices=devices
    )
    base = f"http://127.0.0.1:{web_port}"
    user_add(config, "tech", PASSWORD)
    token = token_add(config, "ehr")
    state_dir = tmp_path / "state"
    gateway = start_service(gateway_factory, config, base)

    # Photos keep arriving while the backup is taken.
    camera = start_camera(folder, tmp_path, "--photos", "6", "--interval", "1.5")
    try:
        wait_for(lambda: len(ledger_rows(state_dir)) >= 2, 120, "the first photos spooled")
        tar_path = tmp_path / "box.tar"
        made = run_cli("backup", "--config", str(config), "--to", str(tar_path))
        assert made.returncode == 0, made.stderr
        assert "patient data" in made.stdout
        assert "The service was running" in made.stdout
        assert camera.wait(150) == 0, camera.log() + gateway.log()[-4000:]
    finally:
        camera.stop()
    acknowledged = len(camera.report()["acknowledged"])
    assert acknowledged == 6
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 6, 120, "6 photos COMMITTED")
    delivered = [r["sop_instance_uid"] for r in ledger_rows(state_dir)]

    # Refused while the service runs: nothing changes under it.
    refused = run_cli("restore", str(tar_path), "--config", str(config), "--keep-config")
    assert refused.returncode == 1
    assert "service is running" in refused.stderr
    assert "nothing was changed" in refused.stderr
    assert not list(tmp_path.glob("*before-restore*"))
    assert gateway.proc is not None
    assert gateway.proc.poll() is None
    assert gateway.stop() == 0

    # The new card: the old state folder is there still, so a restore without
    # --force is refused; with it the old one is moved aside (kept).
    card_config = tmp_path / "card" / "dermgate.toml"
    refused = run_cli("restore", str(tar_path), "--config", str(card_config))
    assert refused.returncode == 1
    assert "is not empty" in refused.stderr
    assert not card_config.exists()
    restored = run_cli("restore", str(tar_path), "--config", str(card_config), "--force")
    assert restored.returncode == 0, restored.stderr
    assert card_config.read_bytes() == config.read_bytes()
    (old,) = tmp_path.glob("state.before-restore-*")
    snapshot = _snapshot(tar_path, tmp_path / "snapshot.sqlite3")
    assert len(snapshot) >= 2
    assert _rows(state_dir) == snapshot, "the restored ledger is the backup's snapshot"
    assert [u for _, u, _ in _rows(old)] == delivered, "the old card's state is kept whole"
    for name in ("web/users.json", "web/api_tokens.json"):
        assert (state_dir / name).read_bytes() == (old / name).read_bytes(), name
    # The spool id mark as the running box had it: above every id of the snapshot.
    mark = int((state_dir / "spool-ids.next").read_text(encoding="ascii"))
    assert mark > max(i for i, _, _ in snapshot)
    waiting = sum(1 for _, _, s in snapshot if s in WAITING)
    if waiting:
        assert f"{waiting} capture(s) not yet sent have no files" in restored.stdout

    # Start again on the restored state: reconciliation shows what has no files.
    gateway = start_service(gateway_factory, card_config, base)
    login, api = asyncio.run(_logged_in_and_token_works(base, token))
    assert login in (302, 303), "the restored login works"
    assert api == 200, "the restored API token works"
    after = {r["id"]: r for r in ledger_rows(state_dir)}
    assert sorted(after) == [i for i, _, _ in snapshot], "no capture vanished"
    for spool_id, sop, state in snapshot:
        row = after[spool_id]
        assert row["sop_instance_uid"] == sop
        if state in WAITING:
            assert row["state"] == "QUARANTINED"
            assert row["reason"] == "raw capture file missing"
        else:
            assert row["state"] in (state, "COMMITTED"), (state, row["state"])
    assert gateway.stop() == 0
    for sop in delivered:
        assert len(orthanc.find_instances(sop)) == 1, f"{sop} is in Orthanc once"
    assert orthanc.count_instances() == 6, "nothing was sent twice"


def test_with_spool_a_capture_not_yet_delivered_is_delivered_once_after_restore(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    orthanc.stop()  # the PACS is down: the photos wait on the old card
    config = gateway_config(
        tmp_path, pacs_port=orthanc.dicom_port, devices=photo_folder_toml(folder, grace=1.0)
    )
    gateway = gateway_factory(config)
    gateway.wait_running()
    camera = start_camera(folder, tmp_path, "--photos", "2")
    try:
        assert camera.wait(150) == 0, camera.log() + gateway.log()[-4000:]
    finally:
        camera.stop()
    old = tmp_path / "state"
    wait_for(lambda: states(old) == ["WRAPPED"] * 2, 120, "2 photos WRAPPED, waiting")
    tar_path = tmp_path / "box-with-spool.tar"
    made = run_cli("backup", "--config", str(config), "--to", str(tar_path), "--with-spool")
    assert made.returncode == 0, made.stderr
    assert "DICOM images" in made.stdout
    assert gateway.stop() == 0

    # A new card with its own configuration (another state_dir) that is kept.
    card = tmp_path / "card"
    card.mkdir()
    card_config = card / "dermgate.toml"
    card_config.write_text(
        config.read_text(encoding="utf-8").replace(str(old), str(card / "state")),
        encoding="utf-8",
    )
    restored = run_cli("restore", str(tar_path), "--config", str(card_config), "--keep-config")
    assert restored.returncode == 0, restored.stderr
    assert "have no files" not in restored.stdout
    assert f'state_dir = "{card / "state"}"' in card_config.read_text(encoding="utf-8")
    backed_up = card_config.with_name("dermgate.toml.from-backup")
    assert backed_up.read_bytes() == config.read_bytes()
    new = card / "state"
    assert _rows(new) == _rows(old)
    for row in ledger_rows(old):
        name = row["dicom_name"]
        assert (new / "spool" / "dicom" / name).read_bytes() == (
            old / "spool" / "dicom" / name
        ).read_bytes()

    orthanc.start()
    gateway = gateway_factory(card_config)
    gateway.wait_running()
    wait_for(lambda: states(new) == ["SENT"] * 2, 120, "the restored photos SENT")
    assert gateway.stop() == 0
    for row in ledger_rows(new):
        assert len(orthanc.find_instances(row["sop_instance_uid"])) == 1
    assert orthanc.count_instances() == 2, "each delivered exactly once"
    assert states(old) == ["WRAPPED"] * 2, "the old card was left as it was"
