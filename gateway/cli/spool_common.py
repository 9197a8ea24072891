"""What every ``dermgate spool`` command shares (see :mod:`gateway.cli.spool`).

The exit codes and their epilog, the refusal that carries one to stderr, loading
the configuration, opening the ledger read-only for one capture, the audit line
before patient data is shown or copied, and the wrapper that turns a command's
refusal into ``dermgate spool ACTION: message`` and its exit code.
"""

from __future__ import annotations

import argparse
import os
import pwd
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

from gateway.core.config import ConfigError, DermGateConfig
from gateway.service.config import load_config
from gateway.spool import admin
from gateway.spool import ledger as db

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NO_SUCH_CAPTURE = 3
EXIT_NOT_POSSIBLE = 4

EXIT_CODES_EPILOG = """\
exit codes:
  0  success
  1  failed at run time (I/O error; ledger busy or locked after a timeout)
  2  bad usage or bad configuration
  3  no such capture (or no spool yet)
  4  not possible in the capture's state (the message says why)
  141  the reader of the output went away (`... | head`); nothing is printed
"""


class _Refusal(Exception):
    """A command stops with an exit code and a message for stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- plumbing


def _load(path: Path) -> DermGateConfig:
    try:
        return load_config(path)
    except ConfigError as err:
        # Each problem already names the file, as ``dermgate check-config`` prints it.
        for problem in err.problems:
            print(problem, file=sys.stderr)
        raise _Refusal(EXIT_USAGE, "") from err


def _existing_ledger(config: DermGateConfig) -> Path:
    path = config.ledger_path()
    if not path.exists():
        raise _Refusal(EXIT_NO_SUCH_CAPTURE, f"no spool yet at {config.spool_dir()}")
    return path


def _ledger_failure(path: Path, err: Exception) -> _Refusal:
    text = str(err)
    if "locked" in text or "busy" in text:
        return _Refusal(
            EXIT_FAILURE,
            f"the ledger {path} is busy (the service is writing to it); try again: {text}",
        )
    return _Refusal(EXIT_FAILURE, f"cannot use the ledger {path}: {text}")


def _run(name: str, body: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    def command(args: argparse.Namespace) -> int:
        try:
            return body(args)
        except _Refusal as err:
            for line in str(err).splitlines():
                print(f"dermgate spool {name}: {line}", file=sys.stderr)
            return err.code

    command.__doc__ = body.__doc__
    return command


def os_user() -> str:
    """Who runs this command: the OS user name (its uid if it has no name)."""
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


def _audit(config: DermGateConfig, action: str, spool_id: int) -> None:
    """Append the audit line for a look at patient data, before it is shown or copied.

    The same log and line as the page's reveal (:mod:`gateway.status.web.audit`),
    with the OS user as who. Run as root, what it creates belongs to the owner of
    ``state_dir`` (the service's user writes the same log). No line, no data:
    raises :class:`_Refusal` (exit 1) if the log cannot be written.
    """
    from gateway.core.state_owner import missing_folders, owned_like
    from gateway.status.web.audit import AuditLog

    log = AuditLog.from_config(config)
    try:
        created = missing_folders(log.path)
        log.append(os_user(), action, spool_id)
        owned_like(config.gateway.state_dir, *created, log.path)
    except OSError as err:
        raise _Refusal(
            EXIT_FAILURE,
            f"cannot write the audit log {log.path} ({err.strerror or err}): "
            f"spool id {spool_id}: patient data neither shown nor copied",
        ) from err


def _read_capture(
    config: DermGateConfig, ref: int | str
) -> tuple[db.SpoolEntry, list[admin.DeliveryRecord]]:
    path = _existing_ledger(config)
    try:
        conn = db.open_ledger(path, readonly=True)
        try:
            entry = admin.find_entry(conn, ref)
            return entry, admin.deliveries(conn, entry.spool_id)
        finally:
            conn.close()
    except admin.NoSuchCapture as err:
        raise _Refusal(EXIT_NO_SUCH_CAPTURE, str(err)) from err
    except sqlite3.Error as err:
        raise _ledger_failure(path, err) from err
