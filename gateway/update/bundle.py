"""A release bundle: a signed manifest naming every file by its SHA-256.

Layout (``scripts/make-bundle.sh`` writes it as one uncompressed tar,
``dermgate-<version>.tar``, whose members sit under ``dermgate-<version>/``; an
unpacked folder works the same)::

    manifest.json        {"format": 1, "name": "dermgate", "version": …, "files": {path: sha256}}
    manifest.json.sig    ssh-keygen -Y sign -n dermgate-release manifest.json
    requirements.lock    name==version --hash=sha256:… for every wheel
    wheels/*.whl         DermGate and every dependency, for the box's Python and CPU
    dermgate-update.pyz  this updater
    install.sh, image/…  the installer and the files it installs; README.md

Reading a bundle verifies the signature of the manifest first (``ssh-keygen -Y
verify`` against the allowed signers file) and then copies only the files the
manifest names, hashing each on the way: a file changed, missing or added after
signing refuses the whole bundle with a plain reason (:class:`BundleRefused`).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

NAMESPACE = "dermgate-release"
DEFAULT_IDENTITY = "release@dermgate"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
FORMAT = 1
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
_PATH_PART = re.compile(r"^[0-9A-Za-z_][0-9A-Za-z._+-]*$")
_CHUNK = 1 << 20


class BundleRefused(Exception):
    """The bundle cannot be trusted or used; the message says why in plain words."""


@dataclass(frozen=True)
class Manifest:
    """What a verified manifest says."""

    name: str
    version: str
    files: dict[str, str]


@dataclass(frozen=True)
class Trust:
    """Whom to trust: the allowed signers file and the signer's identity in it."""

    allowed_signers: Path
    identity: str = DEFAULT_IDENTITY


def valid_version(version: str) -> bool:
    """Whether ``version`` is usable as a release folder name."""
    return bool(_VERSION.match(version))


def _safe_path(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return (
        bool(parts)
        and not name.startswith("/")
        and all(_PATH_PART.match(p) for p in parts)
        and name not in (MANIFEST, SIGNATURE)
    )


def parse_manifest(raw: bytes) -> Manifest:
    """Parse a (verified) manifest; raise :class:`BundleRefused` if it is malformed."""
    try:
        data = json.loads(raw)
        fmt, name, version, files = data["format"], data["name"], data["version"], data["files"]
    except (ValueError, KeyError, TypeError):
        raise BundleRefused("the manifest is not a DermGate bundle manifest") from None
    if fmt != FORMAT or name != "dermgate":
        raise BundleRefused(f"the manifest is format {fmt!r} of {name!r}, not a DermGate bundle")
    if not isinstance(version, str) or not valid_version(version):
        raise BundleRefused("the manifest's version is not a usable release name")
    if not isinstance(files, dict) or not files:
        raise BundleRefused("the manifest lists no files")
    for path, digest in files.items():
        if not isinstance(path, str) or not _safe_path(path):
            raise BundleRefused(f"the manifest names an unsafe path: {path!r}")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise BundleRefused(f"the manifest's hash of {path} is not a SHA-256")
    return Manifest(name=name, version=version, files=dict(files))


def verify_signature(manifest: bytes, signature: bytes, trust: Trust) -> None:
    """Check the manifest's signature with ``ssh-keygen -Y verify``; raise if refused."""
    if not trust.allowed_signers.is_file():
        raise BundleRefused(f"no allowed signers file at {trust.allowed_signers}")
    with tempfile.TemporaryDirectory(prefix="dermgate-sig-") as tmp:
        sig = Path(tmp) / SIGNATURE
        sig.write_bytes(signature)
        done = subprocess.run(
            [
                "ssh-keygen",
                "-Y",
                "verify",
                "-f",
                str(trust.allowed_signers),
                "-I",
                trust.identity,
                "-n",
                NAMESPACE,
                "-s",
                str(sig),
            ],
            input=manifest,
            capture_output=True,
            check=False,
        )
    if done.returncode != 0:
        said = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()
        raise BundleRefused(
            f"signature refused: the manifest is not signed by {trust.identity} as listed in "
            f"{trust.allowed_signers}, or it was changed after signing "
            f"(ssh-keygen: {said[-1] if said else 'rc ' + str(done.returncode)})"
        )


def _copy_hashed(src: IO[bytes], dest: Path) -> str:
    digest = hashlib.sha256()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("xb") as out:
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


class _Source:
    """Files of a bundle, from a tar or a folder."""

    def __init__(self, path: Path) -> None:
        self._tar: tarfile.TarFile | None = None
        self._dir: Path | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        if path.is_dir():
            self._dir = path
            return
        try:
            self._tar = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by close())
        except (OSError, tarfile.TarError) as err:
            raise BundleRefused(
                f"{path.name} is neither a bundle folder nor a tar: {err}"
            ) from None
        try:
            self._index(path.name, self._tar.getmembers())
        except tarfile.TarError as err:
            self._tar.close()
            raise BundleRefused(f"{path.name} is a damaged tar: {err}") from None
        except BaseException:
            self._tar.close()
            raise

    def _index(self, name: str, members: list[tarfile.TarInfo]) -> None:
        tops = {PurePosixPath(m.name).parts[0] for m in members if m.name}
        if len(tops) != 1:
            raise BundleRefused(f"{name} does not hold one bundle folder")
        top = tops.pop()
        for member in members:
            rel = member.name[len(top) + 1 :]
            if member.isfile() and rel:
                self._members[rel] = member
            elif not (member.isdir() or member.name == top):
                raise BundleRefused(f"{name} holds {member.name}, not a plain file")

    def names(self) -> set[str]:
        if self._dir is not None:
            return {
                p.relative_to(self._dir).as_posix() for p in self._dir.rglob("*") if p.is_file()
            }
        return set(self._members)

    def open(self, name: str) -> IO[bytes]:
        if self._dir is not None:
            path = self._dir / name
            if path.is_symlink() or not path.is_file():
                raise BundleRefused(f"the bundle lacks {name}")
            return path.open("rb")
        member = self._members.get(name)
        extracted = self._tar.extractfile(member) if self._tar and member else None
        if extracted is None:
            raise BundleRefused(f"the bundle lacks {name}")
        return extracted

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()


def _copy_checked(source: _Source, name: str, expected: str, dest: Path) -> None:
    with source.open(name) as f:
        if _copy_hashed(f, dest / name) != expected:
            raise BundleRefused(
                f"{name} does not match its hash in the signed manifest "
                "(changed or damaged after signing)"
            )


def unpack(bundle: Path, dest: Path, trust: Trust) -> Manifest:
    """Verify ``bundle`` and copy its files into the new folder ``dest``.

    The signature is checked before anything else is read; every file is hashed as it
    is copied. On any refusal ``dest`` is removed and :class:`BundleRefused` raised.
    """
    source = _Source(bundle)
    try:
        return _unpack(source, dest, trust)
    except (tarfile.TarError, EOFError) as err:
        raise BundleRefused(f"{bundle.name} is damaged: {err}") from None
    finally:
        source.close()


def _unpack(source: _Source, dest: Path, trust: Trust) -> Manifest:
    raw = source.read(MANIFEST)
    verify_signature(raw, source.read(SIGNATURE), trust)
    manifest = parse_manifest(raw)
    extra = source.names() - set(manifest.files) - {MANIFEST, SIGNATURE}
    if extra:
        raise BundleRefused(f"the bundle holds files the manifest does not name: {min(extra)}")
    dest.mkdir(parents=True)
    try:
        for name, expected in sorted(manifest.files.items()):
            _copy_checked(source, name, expected, dest)
        (dest / MANIFEST).write_bytes(raw)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return manifest
