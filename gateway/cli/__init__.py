"""The ``dermgate`` command: every subcommand's parsing, wording and exit code.

The top of the layers: it may import any stage (and the demo); nothing imports it.
:mod:`.main` holds the entry point and the service commands, :mod:`.spool` the
technician's ``dermgate spool`` commands (with :mod:`.spool_view`, :mod:`.spool_act`
and :mod:`.spool_common`), :mod:`.echo` which SOP classes each destination accepts,
:mod:`.check` the box's checks (``dermgate check``, ``check-config``).
"""

from gateway.cli.main import main

__all__ = ["main"]
