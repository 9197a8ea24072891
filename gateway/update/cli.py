"""``dermgate-update``: stage, apply, roll back, check at boot, show the release tree.

::

    dermgate-update stage BUNDLE [--force]     verify a signed bundle, build its venv
    dermgate-update apply VERSION [--force]    wait until idle, switch, restart, gate;
                                               confirm, or roll back and mark it bad
    dermgate-update rollback [--reason TEXT]   back to ``previous`` (OnFailure= runs it)
    dermgate-update boot-check                 at boot: an apply cut short (power cut
                                               between switch and confirm) is undone
    dermgate-update status                     current, previous, pending, staged, bad

Settings come from options or the environment (``DERMGATE_ROOT``,
``DERMGATE_ALLOWED_SIGNERS``, ``DERMGATE_SYSTEMCTL``, ``DERMGATE_BUSY_LOCK``,
``DERMGATE_CONFIG``). Exit codes: 0 done, 1 refused or rolled back, 2 bad usage,
75 (EX_TEMPFAIL) the service stayed busy: try again later.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.update.bundle import DEFAULT_IDENTITY, BundleRefused, Trust
from gateway.update.gate import (
    DEFAULT_BUSY_LOCK,
    Busy,
    GateSettings,
    Systemctl,
    gate_after_restart,
    wait_idle,
)
from gateway.update.releases import ReleaseError, ReleaseTree, boot_id

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TEMPFAIL = 75


def _say(text: str) -> None:
    print(f"dermgate-update: {text}", flush=True)


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def cmd_stage(args: argparse.Namespace, tree: ReleaseTree) -> int:
    """Verify and build a release from a bundle."""
    trust = Trust(Path(args.allowed_signers), args.identity)
    manifest = tree.stage(Path(args.bundle), trust, force=args.force)
    _say(f"{manifest.version} staged: signature and hashes good, venv built offline")
    _say(f"next: dermgate-update apply {manifest.version}")
    return EXIT_OK


def _rollback(tree: ReleaseTree, systemctl: Systemctl | None, version: str, why: str) -> int:
    tree.mark_bad(version, why)
    back = tree.link("previous")
    if back is None or back == version:
        tree.clear_pending()
        _say(f"{version} marked bad ({why}), but there is no previous release to go back to")
        return EXIT_FAILED
    tree.set_link("current", back)
    tree.set_link("previous", None)
    tree.clear_pending()
    if systemctl is not None and not systemctl.restart():
        _say(f"rolled back to {back}, but the service did not restart")
        return EXIT_FAILED
    _say(f"{version} marked bad ({why}); rolled back to {back}")
    return EXIT_FAILED


def cmd_apply(args: argparse.Namespace, tree: ReleaseTree, systemctl: Systemctl) -> int:
    """Switch to a staged release and keep it only if it passes the health gate."""
    version = args.version
    if not tree.complete(version):
        _say(f"{version} is not staged here: run dermgate-update stage BUNDLE first")
        return EXIT_FAILED
    reason = tree.bad_reason(version)
    if reason is not None and not args.force:
        _say(f"{version} is marked bad on this box ({reason}); apply it with --force to retry")
        return EXIT_FAILED
    old = tree.link("current")
    if old == version and tree.confirmed(version) and not args.force:
        _say(f"{version} is already the current, confirmed release")
        return EXIT_OK
    settings = GateSettings(
        config=Path(args.config), soak=args.soak, ready_timeout=args.ready_timeout
    )
    try:
        with wait_idle(Path(args.busy_lock), args.wait_idle):
            if old is not None and old != version:
                tree.set_link("previous", old)
            tree.set_pending(version, tree.link("previous"))
            tree.set_link("current", version)
            _say(f"current -> {version} (was {old or 'nothing'})")
            if args.no_restart:
                tree.clear_bad(version)
                tree.confirm(version)
                _say(f"{version} confirmed without a gate (--no-restart)")
                return EXIT_OK
            restarted = systemctl.restart()
    except Busy as err:
        _say(str(err))
        return EXIT_TEMPFAIL
    failed = (
        gate_after_restart(tree.release(version), systemctl, settings)
        if restarted
        else "the service did not restart"
    )
    if failed is None:
        tree.clear_bad(version)
        tree.confirm(version)
        _say(f"{version} passed its health gate and is confirmed")
        return EXIT_OK
    return _rollback(tree, systemctl, version, f"health gate: {failed}")


def cmd_rollback(args: argparse.Namespace, tree: ReleaseTree, systemctl: Systemctl) -> int:
    """Go back to ``previous`` and mark the current release bad."""
    current = tree.link("current")
    if current is None or tree.link("previous") is None:
        _say("nothing to roll back to (no previous release)")
        return EXIT_FAILED
    return _rollback(tree, None if args.no_restart else systemctl, current, args.reason)


def cmd_boot_check(tree: ReleaseTree) -> int:
    """Undo an apply that an earlier boot left unconfirmed (before the service starts)."""
    pending = tree.pending()
    if pending is None:
        return EXIT_OK
    if pending.boot == boot_id():
        _say(f"an apply of {pending.version} is still running in this boot; leaving it")
        return EXIT_OK
    if tree.link("current") == pending.version and pending.previous:
        tree.set_link("current", pending.previous)
        tree.set_link("previous", None)
        _say(
            f"the update to {pending.version} was cut short before its health gate "
            f"confirmed it; back on {pending.previous}. Run the apply again."
        )
    tree.clear_pending()
    return EXIT_OK


def cmd_status(tree: ReleaseTree) -> int:
    """Print the release tree's state."""
    current = tree.link("current")
    pending = tree.pending()
    print(
        f"current:   {current or '-'}"
        + (" (confirmed)" if current and tree.confirmed(current) else "")
    )
    print(f"previous:  {tree.link('previous') or '-'}")
    print(f"pending:   {pending.version if pending else '-'}")
    print(f"staged:    {' '.join(tree.staged()) or '-'}")
    bad = sorted(p.name for p in tree.bad_dir.iterdir()) if tree.bad_dir.is_dir() else []
    for version in bad:
        print(f"bad:       {version}: {tree.bad_reason(version)}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``dermgate-update`` (and ``dermgate update``)."""
    parser = argparse.ArgumentParser(prog="dermgate-update", description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=_env("DERMGATE_ROOT", "/opt/dermgate"))
    parser.add_argument(
        "--systemctl",
        default=_env("DERMGATE_SYSTEMCTL", "systemctl"),
        help="the systemctl command (a stand-in in tests)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    stage = sub.add_parser("stage", help="verify a signed bundle and build its release")
    stage.add_argument("bundle")
    stage.add_argument(
        "--allowed-signers",
        default=_env("DERMGATE_ALLOWED_SIGNERS", "/etc/dermgate/allowed_signers"),
    )
    stage.add_argument("--identity", default=DEFAULT_IDENTITY)
    stage.add_argument("--force", action="store_true", help="stage a version marked bad")
    apply = sub.add_parser("apply", help="switch to a staged release behind the health gate")
    apply.add_argument("version")
    apply.add_argument("--config", default=_env("DERMGATE_CONFIG", "/etc/dermgate/dermgate.toml"))
    apply.add_argument("--busy-lock", default=_env("DERMGATE_BUSY_LOCK", str(DEFAULT_BUSY_LOCK)))
    apply.add_argument("--wait-idle", type=float, default=600.0, metavar="SECONDS")
    apply.add_argument("--soak", type=float, default=60.0, metavar="SECONDS")
    apply.add_argument("--ready-timeout", type=float, default=120.0, metavar="SECONDS")
    apply.add_argument("--force", action="store_true", help="apply a version marked bad")
    apply.add_argument(
        "--no-restart",
        action="store_true",
        help="switch and confirm without restarting (image builds, no systemd)",
    )
    rollback = sub.add_parser("rollback", help="go back to the previous release")
    rollback.add_argument("--reason", default="rolled back by hand")
    rollback.add_argument("--no-restart", action="store_true")
    sub.add_parser("boot-check", help="undo an apply cut short by a power cut")
    sub.add_parser("status", help="show the release tree")
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Run ``dermgate-update`` with ``argv``; return the exit code."""
    args = build_parser().parse_args(argv)
    os.umask(0o022)  # releases are read by the service user, whatever root's umask is
    tree = ReleaseTree(Path(args.root))
    systemctl = Systemctl.parse(args.systemctl)
    try:
        if args.command == "stage":
            return cmd_stage(args, tree)
        if args.command == "apply":
            return cmd_apply(args, tree, systemctl)
        if args.command == "rollback":
            return cmd_rollback(args, tree, systemctl)
        if args.command == "boot-check":
            return cmd_boot_check(tree)
        return cmd_status(tree)
    except BundleRefused as err:
        _say(f"bundle refused: {err}")
        return EXIT_FAILED
    except ReleaseError as err:
        _say(str(err))
        return EXIT_FAILED
    except OSError as err:
        _say(f"{err.filename or 'file'}: {err.strerror}")
        return EXIT_FAILED


def main() -> None:
    """Entry point of the ``dermgate-update`` zipapp and console script."""
    sys.exit(run())
