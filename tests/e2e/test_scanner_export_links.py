"""Exports whose parts are links, pipes or hard links, and exports with awkward names,
through a real ``dermgate run`` watching a real folder.

A texture, mesh, material library or manifest that is a link would send any file the
service can read to the PACS under the patient the export names; a pipe would hang
the driver. Any such part refuses the whole export, unopened (no partial scans); the
exports behind it are still taken.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from gateway.demo.local_orthanc import free_port
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.refused import reason_of
from tests.support.scanner_export import (
    MTL_TEXT,
    devices_toml,
    texture_jpeg,
    textured_files,
    write_export,
)
from tests.support.state import ledger_rows
from tests.support.waiting import wait_for

PATIENT = {"name": "Okonkwo^Chiamaka", "id": "SECRET-4711"}


def _present(folder: Path, name: bytes) -> bool:
    return os.path.lexists(os.path.join(os.fsencode(folder), name))


def test_exports_with_linked_or_special_parts_are_refused_whole_and_unopened(
    tmp_path: Path, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = texture_jpeg(77)
    (outside / "secret.jpg").write_bytes(secret)
    (outside / "tex").mkdir()
    (outside / "tex" / "skin.jpg").write_bytes(secret)
    write_export(outside, "elsewhere", textured_files(5), patient=PATIENT)
    (outside / "m.mtl").write_bytes(MTL_TEXT)

    def with_part(name: str, part: str, make: Callable[[Path], None], *, listed: bool) -> None:
        files = textured_files(len(name))
        root = write_export(folder / ".build", name, files, patient=PATIENT, listed=listed)
        (root / part).unlink()
        make(root / part)
        root.rename(folder / name)

    # Listed (with sizes and checksums) and unlisted manifests alike.
    with_part(
        "texture-link", "skin.jpg", lambda p: p.symlink_to(outside / "secret.jpg"), listed=False
    )
    with_part("mesh-fifo", "body.obj", os.mkfifo, listed=False)
    with_part("mesh-fifo-listed", "body.obj", os.mkfifo, listed=True)
    with_part("mtl-hardlink", "body.mtl", lambda p: os.link(outside / "m.mtl", p), listed=True)
    with_part(
        "manifest-link",
        "manifest.json",
        lambda p: p.symlink_to(outside / "elsewhere" / "manifest.json"),
        listed=True,
    )
    # A linked sub-folder holding the texture the material library names.
    files = {
        "body.obj": textured_files()["body.obj"],
        "body.mtl": MTL_TEXT.replace(b"skin.jpg", b"tex/skin.jpg"),
    }
    root = write_export(folder / ".build", "folder-link", files, patient=PATIENT, listed=False)
    (root / "tex").symlink_to(outside / "tex")
    root.rename(folder / "folder-link")
    # The export folder itself a link to an export elsewhere.
    (folder / "export-link").symlink_to(outside / "elsewhere")
    # A pipe where an export belongs.
    os.mkfifo(folder / "pipe")
    expected = {
        "texture-link": "symbolic link",
        "mesh-fifo": "named pipe",
        "mesh-fifo-listed": "named pipe",
        "mtl-hardlink": "hard link",
        "manifest-link": "symbolic link",
        "folder-link": "symbolic link",
        "export-link": "symbolic link",
        "pipe": "named pipe",
    }

    config = gateway_config(
        tmp_path, pacs_port=free_port(), devices=devices_toml(folder, incomplete_timeout=600)
    )
    gateway = gateway_factory(config)
    gateway.wait_running()
    write_export(folder, "good", textured_files(9), patient=PATIENT)
    wait_for((folder / ".processed" / "good").exists, 60, "the export behind the bad ones")
    refused = folder / ".refused"
    for name, words in expected.items():
        wait_for(lambda n=name: _present(refused, n.encode()), 30, f"{name} refused")
        assert words in reason_of(refused, name.encode()), name
    assert stat.S_ISFIFO(os.lstat(refused / "mesh-fifo" / "body.obj").st_mode)

    rows = ledger_rows(tmp_path / "state")
    assert len(rows) == 3, "only the good export's three files are in the spool"
    digests = {r["raw_sha256"] for r in rows}
    assert hashlib.sha256(secret).hexdigest() not in digests, "nothing from outside"
    log = gateway.log()
    assert log.count("an export was refused") == len(expected)
    for secret_text in ("Okonkwo", "SECRET-4711", "texture-link", "elsewhere", str(outside)):
        assert secret_text not in log
    assert gateway.stop() == 0


def test_long_and_non_utf8_export_names_are_refused_or_taken_and_never_wedge(
    tmp_path: Path, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    """Exports named with 255 bytes and with bytes that are not UTF-8: a damaged one
    is refused with a reason a technician finds, a good one is taken, twice."""
    folder = tmp_path / "exports"
    folder.mkdir()
    config = gateway_config(tmp_path, pacs_port=free_port(), devices=devices_toml(folder))
    gateway = gateway_factory(config)
    gateway.wait_running()
    base = os.fsencode(folder)
    damaged = textured_files()
    damaged["body.obj"] = b"mtllib body.mtl\nv 0 0 0\n\x00\x13 binary junk\n"
    names = {
        b"Okonkwo" + b"X" * 248: damaged,  # 255 bytes
        b"Okonkwo \xff\xfe" + b"Y" * 241: damaged,  # 250 bytes, not UTF-8
        b"W" * 255: textured_files(3),
        b"export \xff good": textured_files(4),
    }
    for name, files in names.items():
        write_export(folder / ".build", os.fsdecode(name), files, patient=PATIENT)
        os.rename(os.path.join(base, b".build", name), os.path.join(base, name))
    refused = folder / ".refused"
    processed = folder / ".processed"
    for name, files in names.items():
        if files is damaged:
            wait_for(lambda n=name: _present(refused, n), 60, f"{name!r} refused")
            assert "OBJ file is not text" in reason_of(refused, name)
        else:
            wait_for(lambda n=name: _present(processed, n), 60, f"{name!r} processed")
    # The same long name again: acknowledged again under a name that still fits.
    write_export(folder / ".build", "W" * 255, textured_files(3), patient=PATIENT)
    os.rename(os.path.join(base, b".build", b"W" * 255), os.path.join(base, b"W" * 255))
    wait_for(lambda: len(os.listdir(processed)) == 3, 60, "the second copy processed")
    assert sorted(os.listdir(base)) == [b".build", b".processed", b".refused"]
    assert len(ledger_rows(tmp_path / "state")) == 6
    log = gateway.log()
    assert "Okonkwo" not in log
    assert "went away" not in log
    assert "cannot read the export folder" not in log
    assert gateway.stop() == 0
