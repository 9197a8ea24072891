"""``python -m gateway.cli``: the ``dermgate`` command."""

import sys

from gateway.cli import main

sys.exit(main())
