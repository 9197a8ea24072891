"""The service: reading the configuration, holding the state folder's lock, starting
every stage in order under one supervisor, and stopping within a deadline.

:mod:`.app` wires the stages together, :mod:`.supervise` restarts or quarantines a
failing driver, :mod:`.stop_deadline` bounds the stop, :mod:`.state_lock` keeps a
second instance off the state folder, :mod:`.config` reads the file, :mod:`.sd_notify`
tells systemd (READY, WATCHDOG, STATUS, STOPPING), :mod:`.clock` raises the
``clock_not_synchronised`` alarm, :mod:`.logs` formats log lines for journald,
:mod:`.reroute` routes the spool again at start-up, :mod:`.lean` keeps numpy and
Pillow out of an idle service.
"""

__all__ = [
    "app",
    "clock",
    "config",
    "lean",
    "logs",
    "reroute",
    "sd_notify",
    "state_lock",
    "stop_deadline",
    "supervise",
]
