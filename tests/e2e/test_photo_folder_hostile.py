"""Hostile and careless entries in a real photo folder, against a real ``dermgate run``.

What a careless technician, a misbehaving file share or an attacker on the share can
put into the folder: links (to a file outside, to a folder, dangling), a named pipe,
a socket, a device node, a second hard link to a file outside, names of 250 and 255
bytes, names that are not UTF-8, and copies that stall at 0 bytes. Each is set aside
in ``.refused/`` with a plain reason (or, for a stalled copy, waited for) and never
opened; no entry stops the photos behind it, which reach the real Orthanc.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from drivers.photo_folder import simulator as camera
from gateway.demo.local_orthanc import OrthancProcess, free_port
from tests.support.gateway_process import GatewayProcess, gateway_config
from tests.support.photo_folder import photo_folder_toml
from tests.support.refused import reason_of
from tests.support.state import ledger_rows, states
from tests.support.waiting import wait_for


def photo(seed: int) -> bytes:
    """A small camera JPEG (EXIF and all), different for every seed."""
    return camera.make_photo(seed, width=320, height=240)


def _present(folder: Path, name: bytes) -> bool:
    return os.path.lexists(os.path.join(os.fsencode(folder), name))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_links_pipes_sockets_devices_and_hard_links_are_refused_unopened(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    """Nothing but a regular file with one name is ever opened: a FIFO would hang the
    driver for ever, a link or a hard link would send a file from outside the folder
    under whatever name it is given. Photos dropped after them still arrive."""
    folder = tmp_path / "photos"
    folder.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = photo(90)
    (outside / "secret.jpg").write_bytes(secret)
    linked_twice = photo(91)
    (outside / "other.jpg").write_bytes(linked_twice)

    os.mkfifo(folder / "pipe.jpg")
    (folder / "link.jpg").symlink_to(outside / "secret.jpg")
    (folder / "dirlink").symlink_to(outside)
    (folder / "dangling.jpg").symlink_to(outside / "nothing.jpg")
    os.link(outside / "other.jpg", folder / "hard.jpg")
    os.mknod(folder / "sock", stat.S_IFSOCK | 0o600)
    expected = {
        b"pipe.jpg": "named pipe",
        b"link.jpg": "symbolic link",
        b"dirlink": "symbolic link",
        b"dangling.jpg": "symbolic link",
        b"hard.jpg": "hard link",
        b"sock": "socket",
    }
    try:
        os.mknod(folder / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        expected[b"null"] = "device"
    except PermissionError:
        pass  # a container without CAP_MKNOD

    config = gateway_config(
        tmp_path,
        pacs_port=orthanc.dicom_port,
        commit_via=orthanc,
        devices=photo_folder_toml(folder, settle=0.3, poll=0.2),
    )
    gateway = gateway_factory(config)
    gateway.wait_running()
    good = {"IMG_0001.JPG": photo(1), "IMG_0002.JPG": photo(2)}
    for name, data in good.items():
        (folder / name).write_bytes(data)

    for name in good:
        wait_for((folder / ".processed" / name).exists, 60, f"{name} behind the bad entries")
    refused = folder / ".refused"
    for name, words in expected.items():
        wait_for(lambda n=name: _present(refused, n), 30, f"{name!r} set aside")
        assert not _present(folder, name)
        assert words in reason_of(refused, name), name
    assert stat.S_ISFIFO(os.lstat(refused / "pipe.jpg").st_mode), "the pipe was moved, not read"
    assert (refused / "link.jpg").is_symlink()
    assert (outside / "secret.jpg").read_bytes() == secret, "the link's target is untouched"
    assert (outside / "other.jpg").read_bytes() == linked_twice

    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 2, 60, "2 photos COMMITTED")
    digests = {r["raw_sha256"] for r in ledger_rows(state_dir)}
    assert digests == {_sha(d) for d in good.values()}, "nothing from outside the folder"
    assert orthanc.count_instances() == 2
    log = gateway.log()
    assert log.count("set aside in .refused") == len(expected)
    assert "DISCONNECTED" not in log
    assert "went away" not in log
    assert "secret" not in log
    assert "pipe.jpg" not in log
    assert gateway.stop() == 0


def test_long_and_non_utf8_names_never_wedge_the_folder(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    """Every refusal path with names of 250 and 255 bytes and with bytes that are not
    UTF-8: each bad entry is set aside once, with a reason a technician can find, and
    the photos behind it (some with such names themselves) reach the PACS."""
    folder = tmp_path / "photos"
    folder.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(photo(99))
    base = os.fsencode(folder)

    def put(name: bytes, data: bytes) -> None:
        with open(os.path.join(base, name), "wb") as fh:
            fh.write(data)

    garbage = b"not a photo at all\n" * 20
    bad: dict[bytes, str] = {
        b"D" * 246 + b".txt": "not a photo",  # 250 bytes
        b"B" * 251 + b".jpg": "not a photo",  # 255 bytes
        b"Doe \xff\xfe Jane.jpg": "not a photo",
        b"\xff" * 251 + b".jpg": "not a photo",
        b"E" * 251 + b".jpg": "empty",
        b"T" * 251 + b".jpg": "truncated",
        b"F" * 251 + b".jpg": "named pipe",
        b"L\xff" + b"L" * 249 + b".jpg": "symbolic link",
        b"H" * 251 + b".jpg": "hard link",
        b"V" * 255: "a folder",
    }
    for name, kind in bad.items():
        path = os.path.join(base, name)
        if kind == "not a photo":
            put(name, garbage)
        elif kind == "empty":
            put(name, b"")
        elif kind == "truncated":
            put(name, photo(50)[:-100])
        elif kind == "named pipe":
            os.mkfifo(path)
        elif kind == "symbolic link":
            os.symlink(outside / "secret.jpg", path)
        elif kind == "hard link":
            os.link(outside / "secret.jpg", path)
        else:
            os.mkdir(path)
    good: dict[bytes, bytes] = {
        b"A" * 251 + b".jpg": photo(1),
        b"photo \xff.jpg": photo(2),
        b"IMG_0003.JPG": photo(3),
    }

    config = gateway_config(
        tmp_path,
        pacs_port=orthanc.dicom_port,
        commit_via=orthanc,
        devices=photo_folder_toml(folder, settle=0.3, poll=0.2, grace=1.0),
    )
    gateway = gateway_factory(config)
    gateway.wait_running()
    for name, data in good.items():
        put(name, data)
    processed = folder / ".processed"
    refused = folder / ".refused"
    for name in good:
        wait_for(lambda n=name: _present(processed, n), 60, f"{name!r} processed")
    for name, words in bad.items():
        wait_for(lambda n=name: _present(refused, n), 30, f"{name!r} set aside")
        assert words in reason_of(refused, name), name

    # The same names dropped again: the copies need other names in .processed and
    # .refused, which must still fit.
    put(b"A" * 251 + b".jpg", photo(1))
    put(b"B" * 251 + b".jpg", garbage)
    wait_for(lambda: len(os.listdir(processed)) == len(good) + 1, 30, "the re-drop processed")
    wait_for(lambda: not _present(folder, b"B" * 251 + b".jpg"), 30, "the re-drop refused")
    copies = [n for n in os.listdir(os.fsencode(refused)) if n.startswith(b"BBBB")]
    assert len(copies) == 4, copies  # two entries, two reason files
    assert all(len(n) <= 255 for n in copies)
    assert sorted(os.listdir(base)) == [b".processed", b".refused"]

    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 3, 60, "3 photos COMMITTED")
    assert orthanc.count_instances() == 3
    log = gateway.log()
    assert log.count("set aside in .refused") == len(bad) + 1
    assert "DISCONNECTED" not in log
    assert "went away" not in log
    assert "Doe" not in log
    assert "BBBB" not in log
    assert gateway.stop() == 0


def test_a_copy_stalled_at_zero_bytes_is_waited_for_and_taken_back_when_it_resumes(
    tmp_path: Path,
    orthanc: OrthancProcess,
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    """An SMB or phone-sync client creates the file, then waits before writing.

    ``slow``: within the grace period the empty file is left alone (a photo dropped
    after it is taken meanwhile) and is sent once its content arrives.
    ``stalled``: past the grace period the empty file is set aside; the client, which
    still holds it open, then writes the photo: it is taken back and sent."""
    slow = tmp_path / "slow"
    stalled = tmp_path / "stalled"
    for folder in (slow, stalled):
        folder.mkdir()
    devices = photo_folder_toml(slow, name="slow", settle=0.3, poll=0.2, grace=600.0)
    devices += photo_folder_toml(stalled, name="stalled", settle=0.3, poll=0.2, grace=1.0)
    config = gateway_config(
        tmp_path, pacs_port=orthanc.dicom_port, commit_via=orthanc, devices=devices
    )
    gateway = gateway_factory(config)
    gateway.wait_running()

    (slow / "IMG_0001.JPG").write_bytes(b"")
    (slow / "IMG_0002.JPG").write_bytes(photo(2))  # dropped after the empty one
    wait_for((slow / ".processed" / "IMG_0002.JPG").exists, 60, "the photo behind it")
    assert (slow / "IMG_0001.JPG").exists(), "an empty file was refused within its grace"
    assert not list((slow / ".refused").iterdir())
    (slow / "IMG_0001.JPG").write_bytes(photo(1))
    wait_for((slow / ".processed" / "IMG_0001.JPG").exists, 60, "the resumed copy")

    with (stalled / "IMG_0003.JPG").open("wb") as client:
        wait_for((stalled / ".refused" / "IMG_0003.JPG").exists, 60, "the empty file refused")
        assert "empty" in (stalled / ".refused" / "IMG_0003.JPG.reason.txt").read_text()
        client.write(photo(3))  # the copy resumes, into the file set aside
    wait_for((stalled / ".processed" / "IMG_0003.JPG").exists, 60, "the finished photo")
    assert not list((stalled / ".refused").iterdir()), "its stale reason was removed"

    state_dir = tmp_path / "state"
    wait_for(lambda: states(state_dir) == ["COMMITTED"] * 3, 60, "3 photos COMMITTED")
    digests = {r["raw_sha256"] for r in ledger_rows(state_dir)}
    assert digests == {_sha(photo(n)) for n in (1, 2, 3)}
    assert orthanc.count_instances() == 3
    assert gateway.stop() == 0


def test_the_configured_folder_may_itself_be_reached_through_a_link(
    tmp_path: Path, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    """Links inside the folder are refused; the folder the administrator configured
    may be a link (a mount point reached through /srv/photos, say)."""
    real = tmp_path / "mnt" / "share"
    real.mkdir(parents=True)
    (tmp_path / "photos").symlink_to(real)
    config = gateway_config(
        tmp_path,
        pacs_port=free_port(),
        devices=photo_folder_toml(tmp_path / "photos", settle=0.3, poll=0.2),
    )
    gateway = gateway_factory(config)
    gateway.wait_running()
    (real / "IMG_0001.JPG").write_bytes(photo(1))
    wait_for((real / ".processed" / "IMG_0001.JPG").exists, 60, "the photo processed")
    assert [r["raw_sha256"] for r in ledger_rows(tmp_path / "state")] == [_sha(photo(1))]
    assert gateway.stop() == 0
