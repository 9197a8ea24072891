"""``python -m gateway.cli``: the ``dermgate`` command."""

import sys

from gateway.cli.main import main

sys.exit(main())
