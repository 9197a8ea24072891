"""``dermgate backup`` and ``dermgate restore``: moving a box to a new SD card.

::

    dermgate backup --config FILE --to FILE.tar [--with-spool]
    dermgate restore FILE.tar --config FILE [--force] [--keep-config]

Exit codes: 0 done; 1 refused or failed (the service runs, a damaged or hostile
tar, a state folder not empty without ``--force``; nothing was changed); 2 bad
usage or configuration. The work is in gateway/service/backup.py and restore.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.core.config import ConfigError
from gateway.service.backup import BackupFailed, make_backup
from gateway.service.backup_format import BackupDamaged
from gateway.service.config import load_config
from gateway.service.restore import RestoreBadConfig, RestoreRefused, restore_backup

__all__ = ["add_backup_commands"]

_PATIENT_DATA = (
    "It holds patient data (the ledger's patient fields{spool}): keep it where only "
    "clinic IT can read it (an encrypted disk or the hospital's backup store), never "
    "on a shared drive or by e-mail."
)


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def cmd_backup(args: argparse.Namespace) -> int:
    """Write the box's backup tar; 0, or 1 with the reason (nothing left behind)."""
    try:
        config = load_config(args.config, broken_drivers_fatal=False, service=True)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 2
    try:
        report = make_backup(config, args.config, args.to, with_spool=args.with_spool)
    except (BackupFailed, OSError) as err:
        print(f"dermgate backup: {err}; no backup written", file=sys.stderr)
        return 1
    spool = "spool" if args.with_spool else "no spool files"
    print(
        f"wrote {report.path} (mode 0600): {len(report.entries)} files, "
        f"{_mib(report.total_bytes)}, ledger schema {report.schema_version}, {spool}"
    )
    if report.spool_files_gone:
        print(
            f"{report.spool_files_gone} spool file(s) were purged while the backup ran: "
            "their captures were delivered and confirmed meanwhile"
        )
    if report.not_held:
        print(
            "Not in the backup (certificates, keys and secrets the configuration names "
            "outside the state folder): copy them to the new card yourself, before the "
            "restore: " + ", ".join(map(str, report.not_held))
        )
    if report.service_running:
        print(
            "The service was running: captures that arrive from now on are not in this "
            "backup. To move the box, stop the service first and back up again (with "
            "--with-spool)."
        )
    print(_PATIENT_DATA.format(spool=" and the DICOM images" if args.with_spool else ""))
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Restore a backup tar onto this box; 0, or 1 with the reason (nothing changed)."""
    if not args.file.is_file():
        print(f"dermgate restore: {args.file}: no such file", file=sys.stderr)
        return 2
    try:
        report = restore_backup(
            args.file, args.config, force=args.force, keep_config=args.keep_config
        )
    except BackupDamaged as err:
        print(f"dermgate restore: {args.file} refused: {err}; nothing was changed",
              file=sys.stderr)  # fmt: skip
        return 1
    except RestoreRefused as err:
        print(f"dermgate restore: {err}", file=sys.stderr)
        return 2 if isinstance(err, RestoreBadConfig) else 1
    except OSError as err:
        print(f"dermgate restore: {err}; the state folder was left as it was", file=sys.stderr)
        return 1
    print(f"restored {report.files} files of the backup made {report.created} into "
          f"{report.state_dir}")  # fmt: skip
    for path in report.moved_aside:
        print(f"moved aside (kept): {path}")
    if report.missing:
        print(
            f"{report.missing} capture(s) not yet sent have no files in this backup (made "
            'without --with-spool): at the next start they show QUARANTINED "raw capture '
            'file missing"; take them again on the device, or restore a --with-spool backup'
        )
    if report.absent:
        print(
            "the configuration names files that are not on this box (certificates, keys, "
            "secrets: never in a backup); copy them before starting the service: "
            + ", ".join(map(str, report.absent))
        )
    print(f"start the service: dermgate run --config {args.config} (systemctl start dermgate)")
    return 0


def add_backup_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``backup`` and ``restore``."""
    backup = sub.add_parser(
        "backup", help="write a backup tar of this box (safe while the service runs)"
    )
    backup.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")
    backup.add_argument("--to", type=Path, required=True, help="the tar to write (mode 0600)")
    backup.add_argument(
        "--with-spool",
        action="store_true",
        help="add the spool's raw and DICOM files (captures not yet delivered come back whole)",
    )
    backup.set_defaults(func=cmd_backup)

    restore = sub.add_parser(
        "restore", help="restore a backup tar onto this box (the service must be stopped)"
    )
    restore.add_argument("file", type=Path, help="the backup tar")
    restore.add_argument(
        "--config",
        type=Path,
        required=True,
        help="where the box's configuration goes (the backup's replaces it; see --keep-config)",
    )
    restore.add_argument(
        "--force",
        action="store_true",
        help="a state folder that is not empty is moved aside (kept), not refused",
    )
    restore.add_argument(
        "--keep-config",
        action="store_true",
        help="keep the configuration FILE (the state goes to its state_dir); the backup's "
        "is written beside it as FILE.from-backup",
    )
    restore.set_defaults(func=cmd_restore)
