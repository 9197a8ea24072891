"""Reading a release bundle: what is refused before anything is installed.

Small bundles made here and signed with a key made by ssh-keygen (the real tool);
the full build and install are in tests/e2e/test_update.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from gateway.update.bundle import BundleRefused, Trust, unpack


def _sign(key: Path, manifest: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", "dermgate-release", str(manifest)],
        check=True,
    )


@pytest.fixture
def signer(tmp_path: Path) -> tuple[Path, Trust]:
    """A release key and the allowed signers file that trusts it."""
    key = tmp_path / "release"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "release", "-f", str(key)],
        check=True,
    )
    public = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f'release@dermgate namespaces="dermgate-release" {public}\n')
    return key, Trust(allowed)


def _bundle(
    top: Path, key: Path, files: dict[str, bytes], listed: dict[str, str] | None = None
) -> Path:
    top.mkdir(parents=True)
    for name, data in files.items():
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        (top / name).write_bytes(data)
    hashes = listed or {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}
    manifest = {"format": 1, "name": "dermgate", "version": "1.2.3", "files": hashes}
    (top / "manifest.json").write_text(json.dumps(manifest))
    _sign(key, top / "manifest.json")
    return top


FILES = {"requirements.lock": b"x==1 --hash=sha256:00\n", "wheels/x-1-py3-none-any.whl": b"PK"}


def test_a_signed_bundle_unpacks_with_every_file(
    tmp_path: Path, signer: tuple[Path, Trust]
) -> None:
    key, trust = signer
    top = _bundle(tmp_path / "dermgate-1.2.3", key, FILES)
    tar = tmp_path / "dermgate-1.2.3.tar"
    with tarfile.open(tar, "w") as out:
        out.add(top, arcname=top.name)
    manifest = unpack(tar, tmp_path / "out", trust)
    assert manifest.version == "1.2.3"
    assert (tmp_path / "out" / "wheels" / "x-1-py3-none-any.whl").read_bytes() == b"PK"


def test_a_file_the_manifest_does_not_name_is_refused(
    tmp_path: Path, signer: tuple[Path, Trust]
) -> None:
    key, trust = signer
    top = _bundle(tmp_path / "b", key, FILES)
    (top / "wheels" / "evil-1-py3-none-any.whl").write_bytes(b"PK")
    with pytest.raises(BundleRefused, match="files the manifest does not name: wheels/evil"):
        unpack(top, tmp_path / "out", trust)
    assert not (tmp_path / "out").exists()


def test_a_path_out_of_the_release_is_refused_even_when_signed(
    tmp_path: Path, signer: tuple[Path, Trust]
) -> None:
    key, trust = signer
    listed = {"../../etc/cron.d/x": hashlib.sha256(b"x").hexdigest()}
    top = _bundle(tmp_path / "b", key, {}, listed=listed)
    with pytest.raises(BundleRefused, match="unsafe path"):
        unpack(top, tmp_path / "out", trust)


def test_a_link_in_the_tar_is_refused(tmp_path: Path, signer: tuple[Path, Trust]) -> None:
    key, trust = signer
    top = _bundle(tmp_path / "dermgate-1.2.3", key, FILES)
    tar = tmp_path / "b.tar"
    with tarfile.open(tar, "w") as out:
        out.add(top, arcname=top.name)
        link = tarfile.TarInfo(f"{top.name}/wheels/y.whl")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/shadow"
        out.addfile(link, io.BytesIO())
    with pytest.raises(BundleRefused, match="not a plain file"):
        unpack(tar, tmp_path / "out", trust)


def test_no_allowed_signers_file_refuses(tmp_path: Path, signer: tuple[Path, Trust]) -> None:
    key, _ = signer
    top = _bundle(tmp_path / "b", key, FILES)
    with pytest.raises(BundleRefused, match="no allowed signers file"):
        unpack(top, tmp_path / "out", Trust(tmp_path / "missing"))


def test_a_truncated_tar_is_refused_as_damaged(tmp_path: Path, signer: tuple[Path, Trust]) -> None:
    key, trust = signer
    top = _bundle(tmp_path / "dermgate-1.2.3", key, {**FILES, "wheels/big.whl": b"P" * 40000})
    tar = tmp_path / "b.tar"
    with tarfile.open(tar, "w") as out:
        out.add(top, arcname=top.name)
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleRefused):
        unpack(tar, tmp_path / "out", trust)
    assert not (tmp_path / "out").exists()
