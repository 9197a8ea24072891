"""The domain every stage shares, at the bottom of the layers: it imports no stage.

Captures and their identities (:mod:`.capture`), patients (:mod:`.patient`), UIDs
(:mod:`.uids`), alarm codes (:mod:`.alarms`), whether the clock can be trusted
(:mod:`.clock`), the event bus (:mod:`.events`),
durable file writes (:mod:`.files`), backoff (:mod:`.backoff`), the state folder's
owner (:mod:`.state_owner`), the busy lock updates wait for (:mod:`.busy`) and the
configuration models (:mod:`.config`).
"""

__all__ = [
    "alarms",
    "backoff",
    "busy",
    "capture",
    "clock",
    "config",
    "errors",
    "events",
    "files",
    "patient",
    "routing",
    "state_owner",
    "uids",
]
