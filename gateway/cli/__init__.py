"""The ``dermgate`` command: every subcommand's parsing, wording and exit code.

The top of the layers: it may import any stage (and the demo); nothing imports it.
:mod:`.main` holds the entry point and the service commands, :mod:`.spool` the
technician's ``dermgate spool`` commands (with :mod:`.spool_view`, :mod:`.spool_act`
and :mod:`.spool_common`), :mod:`.echo` which SOP classes each destination accepts,
:mod:`.check` the box's checks (``dermgate check``, ``check-config``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dermgate`` console script (see :func:`.main.main`).

    ``dermgate run`` first imports pydicom and pynetdicom as a box without numpy
    would (:mod:`gateway.service.lean`), before anything else imports them, with the
    garbage collector paused until the gateway runs (or the command ends).
    """
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] != ["run"]:
        from gateway.cli.main import main as dermgate

        return dermgate(argv)
    from gateway.service.lean import import_dicom_stack, pause_gc_for_start_up, resume_gc

    pause_gc_for_start_up()  # back on once running (release_start_up_memory)
    try:
        import_dicom_stack()
        from gateway.cli.main import main as dermgate

        return dermgate(argv)
    finally:
        resume_gc()
