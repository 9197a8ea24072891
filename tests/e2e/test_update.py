"""Signed offline updates: ``scripts/make-bundle.sh`` and ``dermgate-update``.

Two real bundles are built once for the module (wheels of DermGate and every
dependency, signed with a key made by ssh-keygen here): 0.1.1 from this checkout and
0.1.2 from a copy whose ``dermgate check --connect`` (the health gate's check) always fails. The
updater is the bundle's own zipapp run by the system's python3 with ``-I -S`` (no
site-packages: it must work when no venv does); staging runs in a network namespace
without a network. systemctl is a stand-in script that records its calls and reports
the state the test gives it; the health gate's C-ECHO goes to a real pynetdicom SCP.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.test_echo import write_config
from tests.support.peers import MisbehavingPacs

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
GOOD, BAD = "0.1.1", "0.1.2"

FAKE_SYSTEMCTL = """#!/usr/bin/python3
import os, sys, time
from pathlib import Path
state = Path(sys.argv[0]).parent
with open(state / "calls.log", "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
cmd = sys.argv[1]
if cmd == "restart" and (state / "hang").exists():
    time.sleep(3600)
if cmd == "is-active":
    print((state / "active").read_text().strip() if (state / "active").exists() else "active")
if cmd == "show":
    path = state / "nrestarts"
    count = int(path.read_text()) if path.exists() else 0
    if (state / "flapping").exists():  # the service restarts again and again
        count += 1
        path.write_text(str(count))
    print(count)
"""


@dataclass
class Bundles:
    """The module's bundles, keys and updater."""

    good: Path
    bad: Path
    foreign: Path
    allowed_signers: Path
    updater: Path


def _copy_source(dest: Path) -> None:
    files = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)


def _make_bundle(key: Path, out: Path, version: str, source: Path = REPO) -> Path:
    done = subprocess.run(
        [
            str(REPO / "scripts" / "make-bundle.sh"),
            "--key",
            str(key),
            "--out",
            str(out),
            "--version",
            version,
            "--source",
            str(source),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": str(REPO / ".venv" / "bin" / "python")},
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return Path(done.stdout.strip().splitlines()[-1])


def _keygen(path: Path, comment: str) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    """A good and a bad bundle, and the good one re-signed by a key nobody trusts."""
    work = tmp_path_factory.mktemp("bundles")
    public = _keygen(work / "release", "release@dermgate")
    allowed = work / "allowed_signers"
    allowed.write_text(f'release@dermgate namespaces="dermgate-release" {public}\n')
    good = _make_bundle(work / "release", work / "out", GOOD)
    broken = work / "broken-src"
    _copy_source(broken)
    check = broken / "gateway" / "cli" / "check.py"
    text = check.read_text()
    head = "def cmd_check(args: argparse.Namespace) -> int:\n"
    assert head in text
    check.write_text(text.replace(head, head + "    return 1  # a release whose check fails\n"))
    bad = _make_bundle(work / "release", work / "out", BAD, source=broken)
    # The same files, signed by another key (its owner calls itself release@dermgate too).
    _keygen(work / "mallory", "release@dermgate")
    unpacked = work / "foreign"
    with tarfile.open(good) as tar:
        tar.extractall(unpacked, filter="data")
    top = unpacked / f"dermgate-{GOOD}"
    (top / "manifest.json.sig").unlink()
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-Y",
            "sign",
            "-f",
            str(work / "mallory"),
            "-n",
            "dermgate-release",
            str(top / "manifest.json"),
        ],
        check=True,
    )
    updater = work / "dermgate-update.pyz"
    with tarfile.open(good) as tar:
        member = tar.extractfile(f"dermgate-{GOOD}/dermgate-update.pyz")
        assert member is not None
        updater.write_bytes(member.read())
    return Bundles(good, bad, top, allowed, updater)


@dataclass
class Box:
    """A release tree in a temporary folder, a stand-in systemctl, a config, a PACS."""

    root: Path
    systemd: Path
    config: Path
    busy_lock: Path
    bundles: Bundles

    def update(
        self, *args: str, offline: bool = False, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the bundle's ``dermgate-update`` with the system's bare python3."""
        cmd = [
            SYSTEM_PYTHON,
            "-I",
            "-S",
            str(self.bundles.updater),
            "--root",
            str(self.root),
            "--systemctl",
            str(self.systemd / "systemctl"),
            *args,
        ]
        if offline:
            cmd = ["unshare", "--net", *cmd]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})}
        )

    def stage(self, bundle: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        """``stage BUNDLE``, with no network."""
        return self.update(
            "stage",
            str(bundle),
            "--allowed-signers",
            str(self.bundles.allowed_signers),
            *extra,
            offline=True,
        )

    def apply(self, version: str, *extra: str) -> subprocess.CompletedProcess[str]:
        """``apply VERSION`` with a short soak."""
        return self.update(
            "apply",
            version,
            "--config",
            str(self.config),
            "--busy-lock",
            str(self.busy_lock),
            "--soak",
            "2",
            "--ready-timeout",
            "10",
            *extra,
        )

    def link(self, name: str) -> str | None:
        """The version ``current``/``previous`` points at."""
        path = self.root / name
        return Path(os.readlink(path)).name if path.is_symlink() else None

    def calls(self) -> list[str]:
        """The stand-in systemctl's calls so far."""
        log = self.systemd / "calls.log"
        return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def box(tmp_path: Path, bundles: Bundles, pacs: MisbehavingPacs) -> Box:
    """An empty release tree whose health gate echoes a real SCP."""
    pacs.start()
    systemd = tmp_path / "systemd"
    systemd.mkdir()
    fake = systemd / "systemctl"
    fake.write_text(FAKE_SYSTEMCTL)
    fake.chmod(0o755)
    (tmp_path / "run").mkdir()
    config = write_config(tmp_path, ("pacs", "MISBEHAVE", pacs.port))
    # No service runs here (systemctl is a stand-in): nothing listens for commitment
    # reports, so the destination does without them and the gate's check needs no listener.
    config.write_text(config.read_text() + "storage_commitment = false\n")
    return Box(tmp_path / "opt", systemd, config, tmp_path / "run" / "busy.lock", bundles)


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_good_bundle_confirmed_busy_service_waited_for_failing_one_rolled_back(box: Box) -> None:
    assert "staged" in _ok(box.stage(box.bundles.good))
    assert "confirmed" in _ok(box.apply(GOOD))
    assert box.link("current") == GOOD
    assert (box.root / "releases" / GOOD / "confirmed").is_file()
    assert "restart dermgate" in box.calls()
    assert not (box.root / "pending").exists()

    _ok(box.stage(box.bundles.bad))
    fd = os.open(box.busy_lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # as the service does while a capture is in flight
        busy = box.apply(BAD, "--wait-idle", "1")
        assert busy.returncode == 75, busy.stdout  # EX_TEMPFAIL: try again later
        assert "stayed busy" in busy.stdout
        assert box.link("current") == GOOD
        assert box.calls().count("restart dermgate") == 1
    finally:
        os.close(fd)

    failed = box.apply(BAD)
    assert failed.returncode == 1
    assert f"{BAD} marked bad (health gate: its check failed" in failed.stdout
    assert f"rolled back to {GOOD}" in failed.stdout
    assert box.link("current") == GOOD
    assert box.link("previous") is None  # a rollback cannot loop
    assert box.calls().count("restart dermgate") == 3  # into GOOD, into BAD, back to GOOD
    assert not (box.root / "pending").exists()

    again = box.stage(box.bundles.bad)
    assert again.returncode == 1
    assert f"{BAD} is marked bad on this box" in again.stdout
    assert box.apply(BAD).returncode == 1
    status = _ok(box.update("status"))
    assert f"current:   {GOOD} (confirmed)" in status
    assert f"bad:       {BAD}: health gate: its check failed" in status


def _flip_byte(bundle: Path, member: str, out: Path) -> Path:
    shutil.copy(bundle, out)
    with tarfile.open(out) as tar:
        offset = tar.getmember(member).offset_data + 100
    with out.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))
    return out


def test_tampered_and_foreign_bundles_are_refused_with_a_reason(box: Box, tmp_path: Path) -> None:
    top = f"dermgate-{GOOD}"
    with tarfile.open(box.bundles.good) as tar:
        wheel = next(n for n in tar.getnames() if "/wheels/pydicom-" in n)
    changed_wheel = _flip_byte(box.bundles.good, wheel, tmp_path / "wheel.tar")
    done = box.stage(changed_wheel)
    assert done.returncode == 1
    assert f"{wheel.removeprefix(top + '/')} does not match its hash in the signed manifest" in (
        done.stdout
    )

    changed_manifest = _flip_byte(box.bundles.good, f"{top}/manifest.json", tmp_path / "m.tar")
    done = box.stage(changed_manifest)
    assert done.returncode == 1
    assert "bundle refused: signature refused" in done.stdout

    done = box.stage(box.bundles.foreign)
    assert done.returncode == 1
    assert "signature refused: the manifest is not signed by release@dermgate" in done.stdout

    releases = box.root / "releases"
    assert not releases.exists() or not any(releases.iterdir())
    assert box.calls() == []


def test_crash_loop_and_power_cut_roll_back(box: Box) -> None:
    _ok(box.stage(box.bundles.good))
    _ok(box.stage(box.bundles.bad))
    _ok(box.apply(GOOD, "--no-restart"))  # as install.sh does in an image build
    _ok(box.apply(BAD, "--no-restart"))
    assert (box.link("current"), box.link("previous")) == (BAD, GOOD)

    # Later a crash loop: systemd's OnFailure= runs dermgate-rollback.service.
    crash = box.update("rollback", "--reason", "crash loop")
    assert crash.returncode == 1
    assert f"{BAD} marked bad (crash loop); rolled back to {GOOD}" in crash.stdout
    assert box.calls() == ["reset-failed dermgate", "restart dermgate"]
    assert (box.link("current"), box.link("previous")) == (GOOD, None)
    assert box.update("rollback").returncode == 1  # nothing left: no loop

    # A power cut between the switch and the confirmation.
    (box.systemd / "hang").touch()
    apply = subprocess.Popen(
        [
            SYSTEM_PYTHON,
            "-I",
            "-S",
            str(box.bundles.updater),
            "--root",
            str(box.root),
            "--systemctl",
            str(box.systemd / "systemctl"),
            "apply",
            BAD,
            "--force",
            "--config",
            str(box.config),
            "--busy-lock",
            str(box.busy_lock),
        ],
        env={**os.environ, "DERMGATE_BOOT_ID": "boot-1"},
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while "restart dermgate" not in box.calls()[2:]:
            assert time.monotonic() < deadline, box.calls()
            time.sleep(0.1)
    finally:
        os.killpg(apply.pid, signal.SIGKILL)
        apply.wait()
    assert box.link("current") == BAD
    assert json.loads((box.root / "pending").read_text())["version"] == BAD

    same_boot = box.update("boot-check", env={"DERMGATE_BOOT_ID": "boot-1"})
    assert "still running in this boot" in _ok(same_boot)
    assert box.link("current") == BAD
    next_boot = _ok(box.update("boot-check", env={"DERMGATE_BOOT_ID": "boot-2"}))
    assert f"cut short before its health gate confirmed it; back on {GOOD}" in next_boot
    assert box.link("current") == GOOD
    assert not (box.root / "pending").exists()

    # A release whose check passes but whose service keeps restarting during the soak.
    (box.systemd / "hang").unlink()
    (box.systemd / "flapping").touch()
    _ok(box.apply(BAD, "--force", "--no-restart"))
    flapping = box.apply(GOOD, "--force")
    assert flapping.returncode == 1
    assert "health gate: the service restarted during the soak" in flapping.stdout
    assert (box.link("current"), box.link("previous")) == (BAD, None)
    assert "restarted during the soak" in (box.root / "bad" / GOOD).read_text()


def test_the_units_of_the_rollback_chain_verify(tmp_path: Path) -> None:
    """dermgate.service, its OnFailure= rollback and the boot check load cleanly."""
    root = tmp_path / "root"
    shutil.copytree("/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for program in ("usr/local/sbin/dermgate-update", "opt/dermgate/current/venv/bin/dermgate"):
        (root / program).parent.mkdir(parents=True, exist_ok=True)
        (root / program).write_text("#!/bin/sh\n")
        (root / program).chmod(0o755)
    names = ["dermgate.service", "dermgate-rollback.service", "dermgate-update-boot.service"]
    for name in names:
        shutil.copy(REPO / "image" / name, units / name)
    done = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            f"--root={root}",
            *(f"/etc/systemd/system/{n}" for n in names),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert not done.stderr.strip()
    assert "OnFailure=dermgate-rollback.service" in (units / "dermgate.service").read_text()


CHROOT = r"""
set -euo pipefail
R="$1"; shift
mkdir -p "$R"/{usr,etc,opt,var/lib,srv,run,tmp,proc,dev,root}
for l in bin lib lib64 sbin; do ln -s "usr/$l" "$R/$l"; done
mount --bind /usr "$R/usr"
mount -o remount,bind,ro "$R/usr"
touch "$R/usr/.writable" 2>/dev/null && { echo "/usr is writable: refusing to go on" >&2; exit 99; }
mount -t tmpfs tmpfs "$R/usr/local"
mkdir -p "$R/usr/local/sbin"
mount -t tmpfs tmpfs "$R/usr/lib/tmpfiles.d"
cp -a /etc/. "$R/etc/"
mount --rbind /dev "$R/dev"
mount -t proc proc "$R/proc"
for run in 1 2; do
  env -i PATH=/usr/local/sbin:/usr/sbin:/usr/bin HOME=/root \
    chroot "$R" /bin/bash /tmp/bundle/install.sh /tmp/bundle.tar \
    --allowed-signers /tmp/allowed_signers --no-apt
done
chroot "$R" /usr/local/sbin/dermgate-update status
chroot "$R" /opt/dermgate/current/venv/bin/dermgate --help | sed -n 1p
"""


def test_install_sh_installs_a_release_from_the_bundle_offline(
    bundles: Bundles, tmp_path: Path
) -> None:
    """image/install.sh in a throw-away root (the host's /usr read-only, a copy of its
    /etc), in a private mount namespace without a network, run twice (idempotent)."""
    root = tmp_path / "root"
    (root / "tmp").mkdir(parents=True)
    with tarfile.open(bundles.good) as tar:
        tar.extractall(root / "tmp" / "unpacked", filter="data")
    (root / "tmp" / "bundle").symlink_to(f"unpacked/dermgate-{GOOD}")
    shutil.copy(bundles.good, root / "tmp" / "bundle.tar")
    shutil.copy(bundles.allowed_signers, root / "tmp" / "allowed_signers")
    done = subprocess.run(
        [
            "unshare",
            "--mount",
            "--net",
            "--propagation",
            "private",
            "bash",
            "-c",
            CHROOT,
            "chroot-box",
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"current:   {GOOD} (confirmed)" in done.stdout
    opt = root / "opt" / "dermgate"
    assert os.readlink(opt / "current") == f"releases/{GOOD}"
    assert (root / "etc/dermgate/allowed_signers").read_text() == (
        bundles.allowed_signers.read_text()
    )
    assert (root / "etc/dermgate/dermgate.toml").is_file()
    assert "dermgate:" in (root / "etc/passwd").read_text()
    units = root / "etc/systemd/system"
    for unit in ("dermgate.service", "dermgate-rollback.service", "dermgate-update-boot.service"):
        assert (units / unit).is_file()
    wants = units / "multi-user.target.wants"
    assert (wants / "dermgate.service").is_symlink()
    assert (wants / "dermgate-update-boot.service").is_symlink()
    assert "staged: signature and hashes good" in done.stdout
    assert "usage: dermgate" in done.stdout  # the installed release runs in that root
