"""A bound on how long stopping the service may take.

When a stop begins, everything acknowledged is already durable in the spool, so a
stage that does not finish (a peer that holds an association open, a thread blocked
in a library call) must not keep the service from exiting: the box would hang in
``systemctl stop`` or a reboot. After ``seconds`` the deadline logs that the stop was
forced, writes every thread's stack to stderr (the journal on a box: function names
and lines, never data) so the cause can be found, and ends the process.

``kill -USR1`` on the running service writes the same stacks without stopping it.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading

log = logging.getLogger(__name__)


def enable_stack_dumps() -> None:
    """Let ``kill -USR1 <pid>`` write every thread's stack to stderr."""
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)


class StopDeadline:
    """Ends the process ``seconds`` after :meth:`arm`, unless it ended before."""

    def __init__(self, seconds: float, exit_code: int = 0) -> None:
        self.seconds = seconds
        self.exit_code = exit_code
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        """Start counting (idempotent: a second stop signal does not restart it)."""
        if self._timer is not None:
            return
        self._timer = threading.Timer(self.seconds, self._expire)
        self._timer.name = "stop-deadline"
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        waiting = sorted(
            t.name for t in threading.enumerate() if t is not threading.current_thread()
        )
        log.error(
            "stopping took longer than %.0f s; exiting anyway (everything acknowledged is "
            "in the spool). Still running: %s. Thread stacks follow on stderr.",
            self.seconds,
            ", ".join(waiting) or "nothing",
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        logging.shutdown()
        sys.stderr.flush()
        os._exit(self.exit_code)
