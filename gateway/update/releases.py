"""The release tree: one venv per release, ``current``/``previous`` symlinks, marks.

::

    ROOT/releases/<version>/   the bundle's files, venv/, .complete (never changed after)
    ROOT/releases/<version>/confirmed   the version passed its health gate here
    ROOT/current -> releases/<version>  what the service runs (ExecStart=ROOT/current/…)
    ROOT/previous -> releases/<version> where a rollback goes (removed by a rollback)
    ROOT/pending                        an apply switched ``current`` and has not
                                        confirmed yet (JSON: version, previous, boot id)
    ROOT/bad/<version>                  refused by its health gate; the reason inside

Symlinks are relative (the tree can live anywhere) and switched atomically (a new
link under a temporary name renamed over the old one), followed by ``fsync`` of ROOT.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from gateway.update.bundle import MANIFEST, Manifest, Trust, unpack, valid_version

COMPLETE = ".complete"
CONFIRMED = "confirmed"


class ReleaseError(Exception):
    """A release cannot be staged, applied or rolled back; the message says why."""


def boot_id() -> str:
    """This boot's id (``DERMGATE_BOOT_ID`` overrides it, for tests)."""
    forced = os.environ.get("DERMGATE_BOOT_ID")
    if forced:
        return forced
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _clean_env() -> dict[str, str]:
    """The environment for pip: no PIP_* settings or config files of the host leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(cmd: list[str], what: str) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=_clean_env())
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise ReleaseError(f"{what} failed (rc {done.returncode}):\n{tail}")
    return done.stdout


@dataclass(frozen=True)
class Pending:
    """An apply in progress (or cut short): which version, from which, in which boot."""

    version: str
    previous: str | None
    boot: str


class ReleaseTree:
    """Operations on one release tree (``/opt/dermgate`` on a box)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.releases = root / "releases"
        self.bad_dir = root / "bad"

    # --- reading -------------------------------------------------------------------
    def release(self, version: str) -> Path:
        """The folder of ``version`` (which may not exist)."""
        if not valid_version(version):
            raise ReleaseError(f"{version!r} is not a release name")
        return self.releases / version

    def link(self, name: str) -> str | None:
        """The version a ``current``/``previous`` link points at, or None."""
        path = self.root / name
        if not path.is_symlink():
            return None
        return Path(os.readlink(path)).name

    def complete(self, version: str) -> bool:
        """Whether ``version`` is staged (its venv built and checked)."""
        return (self.release(version) / COMPLETE).is_file()

    def confirmed(self, version: str) -> bool:
        """Whether ``version`` passed its health gate on this box."""
        return (self.release(version) / CONFIRMED).is_file()

    def bad_reason(self, version: str) -> str | None:
        """Why ``version`` is marked bad, or None."""
        try:
            return (self.bad_dir / version).read_text().strip() or "marked bad"
        except FileNotFoundError:
            return None

    def staged(self) -> list[str]:
        """The staged versions, sorted by name."""
        if not self.releases.is_dir():
            return []
        return sorted(p.name for p in self.releases.iterdir() if (p / COMPLETE).is_file())

    def pending(self) -> Pending | None:
        """The pending marker, or None (an unreadable marker counts as absent)."""
        try:
            data = json.loads((self.root / "pending").read_text())
            return Pending(data["version"], data.get("previous"), data["boot"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # --- writing -------------------------------------------------------------------
    def _sync_root(self) -> None:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def set_link(self, name: str, version: str | None) -> None:
        """Point ``name`` at ``version`` atomically (None removes the link)."""
        path = self.root / name
        if version is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            tmp = self.root / f".{name}.tmp"
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(Path("releases") / version)
            tmp.replace(path)
        self._sync_root()

    def _write(self, path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        self._sync_root()

    def set_pending(self, version: str, previous: str | None) -> None:
        """Write the pending marker (before ``current`` is switched)."""
        data = {"version": version, "previous": previous, "boot": boot_id()}
        self._write(self.root / "pending", json.dumps(data) + "\n")

    def clear_pending(self) -> None:
        """Remove the pending marker."""
        with contextlib.suppress(FileNotFoundError):
            (self.root / "pending").unlink()
        self._sync_root()

    def confirm(self, version: str) -> None:
        """Mark ``version`` as passed its gate and end the pending apply."""
        self._write(self.release(version) / CONFIRMED, f"{boot_id()}\n")
        self.clear_pending()

    def mark_bad(self, version: str, reason: str) -> None:
        """Pin ``version`` as bad: ``stage`` and ``apply`` refuse it unless forced."""
        self.bad_dir.mkdir(parents=True, exist_ok=True)
        self._write(self.bad_dir / version, reason.strip() + "\n")
        with contextlib.suppress(FileNotFoundError):
            (self.release(version) / CONFIRMED).unlink()

    def clear_bad(self, version: str) -> None:
        """Lift a bad mark (``--force``)."""
        with contextlib.suppress(FileNotFoundError):
            (self.bad_dir / version).unlink()

    # --- staging -------------------------------------------------------------------
    def stage(self, bundle: Path, trust: Trust, *, force: bool = False) -> Manifest:
        """Verify ``bundle`` and build its release: venv from its wheels, offline.

        Idempotent for a version already staged. The venv is built in its final place
        (venvs are not relocatable) from the bundle's hash-pinned wheels with ``pip
        --no-index --require-hashes``: nothing is downloaded or compiled on the box.
        """
        self.releases.mkdir(parents=True, exist_ok=True)
        scratch = self.releases / f".unpack-{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        manifest = unpack(bundle, scratch, trust)
        try:
            version = manifest.version
            reason = self.bad_reason(version)
            if reason is not None and not force:
                raise ReleaseError(
                    f"{version} is marked bad on this box ({reason}); "
                    "stage it with --force to try it again"
                )
            self.clear_bad(version)
            target = self.release(version)
            if self.complete(version):
                if (target / MANIFEST).read_bytes() != (scratch / MANIFEST).read_bytes():
                    raise ReleaseError(
                        f"{version} is already staged from another bundle: a version is "
                        "never changed once staged; give the new build its own version"
                    )
                return manifest
            if version in (self.link("current"), self.link("previous")):
                raise ReleaseError(f"{version} is in use but incomplete; not touching it")
            shutil.rmtree(target, ignore_errors=True)  # a stage cut short earlier
            scratch.rename(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        try:
            self._build_venv(target, version)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        return manifest

    def _build_venv(self, target: Path, version: str) -> None:
        venv = target / "venv"
        _run([sys.executable, "-m", "venv", str(venv)], "creating the venv")
        python = str(venv / "bin" / "python")
        _run(
            [
                python,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-index",
                "--no-cache-dir",
                "--only-binary=:all:",
                "--require-hashes",
                "--find-links",
                str(target / "wheels"),
                "-r",
                str(target / "requirements.lock"),
            ],
            "installing the wheels (offline, hash-pinned)",
        )
        probe = "import importlib.metadata as m, gateway.cli; print(m.version('dermgate'))"
        installed = _run([python, "-I", "-c", probe], "importing the release").strip()
        if installed != version:
            raise ReleaseError(f"the bundle says {version} but its wheel installs {installed}")
        (target / COMPLETE).write_text(f"{version}\n")
