"""``dermgate restore`` refuses a backup it cannot trust, and writes nothing then.

A box with a real ledger, logins and tokens is backed up by ``dermgate backup``;
the tar is then damaged or made hostile (a ``../`` name, an absolute path, a
symlink, a hard link, a device, a newer schema) the way an attacker or a bad copy
would, each listed in a consistent manifest so that only the member checks can
stop it. Every one must be refused with exit 1 and a plain reason, with nothing
written anywhere: not the target, not the state folder, not the configuration.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.demo.local_orthanc import free_port
from gateway.service.config import load_config
from gateway.spool.schema import SCHEMA_VERSION, open_ledger
from gateway.spool.send_now import SendNowStore
from gateway.spool.spool_ids import high_water_path, write_high_water
from tests.support.gateway_process import gateway_config
from tests.support.web import PASSWORD, run_cli, user_add

Member = tuple[tarfile.TarInfo, bytes]


def _box(tmp_path: Path) -> Path:
    config = gateway_config(tmp_path, pacs_port=free_port())
    loaded = load_config(config)
    open_ledger(loaded.ledger_path()).close()
    write_high_water(high_water_path(loaded.gateway.state_dir), 42)  # as a service leaves it
    user_add(config, "tech", PASSWORD)
    web = loaded.gateway.state_dir / "web"
    (web / "audit.log").write_text("t=1 user=tech action=reveal\n", encoding="utf-8")
    (web / "audit.log.1").write_text("t=0 user=tech action=login\n", encoding="utf-8")
    SendNowStore(loaded.gateway.state_dir).request("pacs", "cli:tech", now=1.0)
    return config


def _members(tar_path: Path) -> list[Member]:
    with tarfile.open(tar_path) as tar:
        out = []
        for member in tar:
            source = tar.extractfile(member)
            out.append((member, source.read() if source is not None else b""))
        return out


def _rebuild(members: list[Member], out: Path, edit: Callable[[dict[str, object]], None]) -> Path:
    """Write ``members`` again, the manifest (last) edited by ``edit`` and re-hashed."""
    body, (manifest_info, manifest_raw) = members[:-1], members[-1]
    manifest = json.loads(manifest_raw)
    manifest["files"] = [
        {
            "name": info.name,
            "role": "state",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "mode": 0o600,
        }
        if not any(f["name"] == info.name for f in manifest["files"])
        else next(f for f in manifest["files"] if f["name"] == info.name)
        for info, data in body
        if info.isreg()
    ]
    edit(manifest)
    raw = json.dumps(manifest).encode()
    manifest_info.size = len(raw)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in [*body, (manifest_info, raw)]:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return out


def _file(name: str, data: bytes = b"pwned\n") -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, target: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, b""


def _nothing_written(tmp_path: Path, card: Path) -> None:
    assert not card.exists(), "the new card's folder was written"
    assert not (tmp_path / "evil").exists()
    assert not (tmp_path / "outside").exists()
    assert not list(tmp_path.glob(".*restoring*")), "a half-written copy was left"
    assert not list(tmp_path.glob("*before-restore*")), "something was moved aside"


def test_a_backup_is_private_and_lists_every_file_with_its_hash(tmp_path: Path) -> None:
    config = _box(tmp_path)
    tar_path = tmp_path / "box.tar"
    result = run_cli("backup", "--config", str(config), "--to", str(tar_path))
    assert result.returncode == 0, result.stderr
    assert "patient data" in result.stdout
    assert "service was running" not in result.stdout
    assert stat.S_IMODE(tar_path.stat().st_mode) == 0o600
    members = _members(tar_path)
    assert members[-1][0].name == "MANIFEST.json"
    manifest = json.loads(members[-1][1])
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["with_spool"] is False
    listed = {f["name"]: f for f in manifest["files"]}
    assert set(listed) == {
        "config.toml",
        "ledger.sqlite3",
        "users.json",
        "spool-ids.next",
        "audit/audit.log",
        "audit/audit.log.1",
        "state/send-now/pacs.json",
    }
    assert listed["audit/audit.log.1"]["role"] == "audit"
    for info, data in members[:-1]:
        assert listed[info.name]["sha256"] == hashlib.sha256(data).hexdigest()
    assert config.read_bytes() == {i.name: d for i, d in members}["config.toml"]
    assert not list(tmp_path.glob(".box.tar*")), "no temporary file left"

    inside = run_cli("backup", "--config", str(config), "--to", str(tmp_path / "state" / "b.tar"))
    assert inside.returncode == 1
    assert "inside the state folder" in inside.stderr
    assert not (tmp_path / "state" / "b.tar").exists()

    missing = run_cli("backup", "--config", str(tmp_path / "nope.toml"), "--to", str(tar_path))
    assert missing.returncode == 2


@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param(lambda t: [_file("../evil")], id="dot-dot"),
        pytest.param(lambda t: [_file("state/../../evil")], id="dot-dot-inside"),
        pytest.param(lambda t: [_file(str(t / "outside"))], id="absolute"),
        pytest.param(lambda t: [_special("state/link", tarfile.SYMTYPE, str(t))], id="symlink"),
        pytest.param(
            lambda t: [_special("state/hard", tarfile.LNKTYPE, "config.toml")], id="hardlink"
        ),
        pytest.param(lambda t: [_special("state/tty", tarfile.CHRTYPE)], id="device"),
        pytest.param(lambda t: [_special("state/sub", tarfile.DIRTYPE)], id="folder"),
        pytest.param(lambda t: [_file("audit/../../evil")], id="audit-dot-dot"),
    ],
)
def test_a_hostile_member_is_refused_and_nothing_is_written(
    tmp_path: Path, hostile: Callable[[Path], list[Member]]
) -> None:
    config = _box(tmp_path)
    good = tmp_path / "box.tar"
    assert run_cli("backup", "--config", str(config), "--to", str(good)).returncode == 0
    members = _members(good)
    bad = _rebuild([*members[:-1], *hostile(tmp_path), members[-1]], tmp_path / "bad.tar",
                   lambda m: None)  # fmt: skip
    card = tmp_path / "card"
    result = run_cli("restore", str(bad), "--config", str(card / "dermgate.toml"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "refused" in result.stderr
    assert "nothing was changed" in result.stderr
    assert "Traceback" not in result.stderr
    _nothing_written(tmp_path, card)


def test_a_damaged_or_newer_backup_is_refused(tmp_path: Path) -> None:
    config = _box(tmp_path)
    good = tmp_path / "box.tar"
    assert run_cli("backup", "--config", str(config), "--to", str(good)).returncode == 0
    card = tmp_path / "card"

    # One byte of the ledger flipped in the tar: its hash no longer matches.
    data = bytearray(good.read_bytes())
    members = _members(good)
    ledger = next(d for i, d in members if i.name == "ledger.sqlite3")
    at = bytes(data).index(ledger[:4096]) + 2000
    data[at] ^= 0xFF
    tampered = tmp_path / "tampered.tar"
    tampered.write_bytes(bytes(data))
    result = run_cli("restore", str(tampered), "--config", str(card / "dermgate.toml"))
    assert result.returncode == 1
    assert "ledger.sqlite3 does not match its SHA-256" in result.stderr
    _nothing_written(tmp_path, card)

    # Cut short: no manifest at the end.
    short = tmp_path / "short.tar"
    short.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    result = run_cli("restore", str(short), "--config", str(card / "dermgate.toml"))
    assert result.returncode == 1
    assert "refused" in result.stderr
    _nothing_written(tmp_path, card)

    def newer(manifest: dict[str, object]) -> None:
        manifest["schema_version"] = SCHEMA_VERSION + 1

    future = _rebuild(members, tmp_path / "future.tar", newer)
    result = run_cli("restore", str(future), "--config", str(card / "dermgate.toml"))
    assert result.returncode == 1
    assert "newer than this DermGate knows" in result.stderr
    _nothing_written(tmp_path, card)

    # --keep-config with a configuration that is not there: bad usage, nothing written.
    result = run_cli("restore", str(good), "--config", str(card / "dermgate.toml"), "--keep-config")
    assert result.returncode == 2
    assert "cannot read" in result.stderr
    _nothing_written(tmp_path, card)

    # The untouched backup restores (into the same place it came from: refused
    # while that holds a box's state, unless --force moves it aside).
    result = run_cli("restore", str(good), "--config", str(card / "dermgate.toml"))
    assert result.returncode == 1
    assert "is not empty" in result.stderr
    assert not card.exists()
    result = run_cli("restore", str(good), "--config", str(card / "dermgate.toml"), "--force")
    assert result.returncode == 0, result.stderr
    assert (card / "dermgate.toml").read_bytes() == config.read_bytes()
    aside = list(tmp_path.glob("state.before-restore-*"))
    assert len(aside) == 1
    assert (aside[0] / "ledger.sqlite3").is_file()
    assert f"moved aside (kept): {aside[0]}" in result.stdout
    for name in ("web/users.json", "web/audit.log", "web/audit.log.1", "send-now/pacs.json"):
        assert (tmp_path / "state" / name).read_bytes() == (aside[0] / name).read_bytes()


def test_a_backup_succeeds_while_the_ledger_is_busy_and_takes_only_what_is_committed(
    tmp_path: Path,
) -> None:
    config = _box(tmp_path)
    ledger = open_ledger(load_config(config).ledger_path())
    try:
        # The worklist cache lives in the ledger; the service is in the middle of a
        # write to it (a transaction holding the write lock) while the backup runs.
        ledger.execute("INSERT INTO worklist_fetch (id, items) VALUES (1, 3)")
        ledger.execute("BEGIN IMMEDIATE")
        ledger.execute("UPDATE worklist_fetch SET items = 99")
        tar_path = tmp_path / "busy.tar"
        result = run_cli("backup", "--config", str(config), "--to", str(tar_path))
        assert result.returncode == 0, result.stderr
        ledger.execute("ROLLBACK")
    finally:
        ledger.close()
    members = {i.name: d for i, d in _members(tar_path)}
    copy = tmp_path / "copy.sqlite3"
    copy.write_bytes(members["ledger.sqlite3"])
    conn = sqlite3.connect(copy)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT items FROM worklist_fetch").fetchall() == [(3,)]
    finally:
        conn.close()


def test_restored_files_belong_to_the_service_user_of_the_state_folder(tmp_path: Path) -> None:
    """Run as root (the README's ``sudo dermgate restore``), the restored files get the
    state folder's owner, so the service (its own user) can open them."""
    config = _box(tmp_path)
    tar_path = tmp_path / "box.tar"
    assert run_cli("backup", "--config", str(config), "--to", str(tar_path)).returncode == 0
    state = tmp_path / "state"
    if os.geteuid() == 0:
        os.chown(state, 65534, 65534)  # the service's user on a box ("nobody" here)
    expected = (state.stat().st_uid, state.stat().st_gid)
    result = run_cli("restore", str(tar_path), "--config", str(config), "--force")
    assert result.returncode == 0, result.stderr
    for folder, dirs, files in os.walk(state):
        for name in [*dirs, *files, "."]:
            info = (Path(folder) / name).stat()
            assert (info.st_uid, info.st_gid) == expected, Path(folder) / name
    assert stat.S_IMODE((state / "ledger.sqlite3").stat().st_mode) == 0o600


def test_secrets_outside_the_state_folder_are_named_not_copied(tmp_path: Path) -> None:
    config = _box(tmp_path)
    secret = tmp_path / "etc" / "mqtt.pass"
    secret.parent.mkdir()
    secret.write_text("broker-password\n", encoding="utf-8")
    secret.chmod(0o600)
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text + f'\n[mqtt]\nhost = "127.0.0.1"\nusername = "box"\npassword_file = "{secret}"\n',
        encoding="utf-8",
    )
    tar_path = tmp_path / "box.tar"
    result = run_cli("backup", "--config", str(config), "--to", str(tar_path))
    assert result.returncode == 0, result.stderr
    assert f"copy them to the new card yourself, before the restore: {secret}" in result.stdout
    with tarfile.open(tar_path) as tar:
        for member in tar:
            source = tar.extractfile(member)
            assert source is not None
            assert b"broker-password" not in source.read(), member.name

    # On a new card without it, restore says so (the restore itself goes ahead).
    secret.unlink()
    card = tmp_path / "card" / "dermgate.toml"
    result = run_cli("restore", str(tar_path), "--config", str(card), "--force")
    assert result.returncode == 0, result.stderr
    assert f"copy them before starting the service: {secret}" in result.stdout
