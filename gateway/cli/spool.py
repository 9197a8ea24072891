"""The technician's ``dermgate spool`` commands.

::

    dermgate spool list   [--state STATE] [--json] --config FILE
    dermgate spool show   ID [--json] [--reveal] --config FILE
    dermgate spool retry  ID [--json] --config FILE
    dermgate spool forget-destination NAME [--yes] --config FILE
    dermgate spool export ID --to DIR [--json] --config FILE
    dermgate spool rebuild --config FILE

ID is the spool id shown by ``spool list`` or the capture's SOP Instance UID.
Nothing prints patient data except ``show --reveal``, which says so on stderr.
``show --reveal`` and ``export`` (a copy of patient data) first append a line to the
audit log, as the page's reveal does (who is the OS user); no line, no data.
They work beside a running service: reads use a read-only ledger connection, the
retry waits for the service's write lock (see :mod:`gateway.spool.admin`). ``rebuild``
replaces a lost ledger (:mod:`gateway.spool.rebuild`) and so takes the state folder's
lock: it refuses while the service runs.

Exit codes:

* 0 — success;
* 1 — failed at run time (I/O error; ledger busy or locked after a timeout);
* 2 — bad usage or bad configuration;
* 3 — no such capture (or no spool yet at the configured ``state_dir``);
* 4 — not possible in the capture's state (retry of a capture that is not
  QUARANTINED, export of a file that is gone…); the message says why.
* 141 — the reader of the output went away (``spool list | head``), quietly.

This module holds the parser; the commands are in :mod:`.spool_view` (list, show)
and :mod:`.spool_act` (retry, forget-destination, export, rebuild), which share
:mod:`.spool_common`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.cli.spool_act import (
    cmd_spool_export,
    cmd_spool_forget_destination,
    cmd_spool_rebuild,
    cmd_spool_retry,
)
from gateway.cli.spool_common import EXIT_CODES_EPILOG
from gateway.cli.spool_view import cmd_spool_list, cmd_spool_show
from gateway.spool import admin
from gateway.spool.states import CaptureState

# --------------------------------------------------------------------------- parser


def _capture_ref(text: str) -> int | str:
    try:
        return admin.parse_ref(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def add_spool_commands(sub: Any) -> None:
    """Add ``spool`` and its actions to the ``dermgate`` subparsers ``sub``."""
    formatter = argparse.RawDescriptionHelpFormatter
    spool = sub.add_parser(
        "spool",
        help="inspect and act on the spool",
        epilog=EXIT_CODES_EPILOG,
        formatter_class=formatter,
    )
    actions = spool.add_subparsers(dest="spool_command", required=True, metavar="ACTION")

    def action(name: str, help_text: str, func: Callable[..., int]) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EXIT_CODES_EPILOG,
            formatter_class=formatter,
        )
        parser.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")
        parser.set_defaults(func=func)
        return parser

    ref_help = "spool id (as shown by `spool list`) or SOP Instance UID"

    listing = action("list", "one line per capture", cmd_spool_list)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.add_argument(
        "--state", choices=[str(s) for s in CaptureState], help="only captures in this state"
    )

    show = action(
        "show", "everything the ledger knows about one capture (no patient data)", cmd_spool_show
    )
    show.add_argument("ref", metavar="ID", type=_capture_ref, help=ref_help)
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.add_argument(
        "--reveal",
        action="store_true",
        help="also read the DICOM file and show the patient data in it",
    )

    retry = action(
        "retry",
        "release a QUARANTINED capture once its cause is fixed (wrap or send it again)",
        cmd_spool_retry,
    )
    retry.add_argument("ref", metavar="ID", type=_capture_ref, help=ref_help)
    retry.add_argument("--json", action="store_true", help="one JSON object")

    forget = action(
        "forget-destination",
        "let go of a destination removed from the configuration: the captures still "
        "waiting for it stop waiting (its deliveries are dropped for good)",
        cmd_spool_forget_destination,
    )
    forget.add_argument("name", metavar="NAME", help="the removed destination's name")
    forget.add_argument("--yes", action="store_true", help="do it (without: say what it would do)")

    export = action(
        "export",
        "copy a capture's DICOM file (or never-wrapped device file) into a folder",
        cmd_spool_export,
    )
    export.add_argument("ref", metavar="ID", type=_capture_ref, help=ref_help)
    export.add_argument(
        "--to", type=Path, required=True, metavar="DIR", help="folder (created if missing)"
    )
    export.add_argument(
        "--json", action="store_true", help="print path, size and sha256 as one JSON object"
    )

    action(
        "rebuild",
        "rebuild a missing or empty ledger from the spool's own files (service stopped)",
        cmd_spool_rebuild,
    )
