"""The spool: the ledger (SQLite, all of the box's SQL) and the spooled files.

What is durable, in which state, and why; purge, reconcile, rebuild after a lost
ledger, disk space, and the capture details people see. Stages hand work to one
another only through it.
"""

__all__ = [
    "admin",
    "captures",
    "clock",
    "commitments",
    "deliveries",
    "details",
    "dirs",
    "figures",
    "ledger",
    "purge",
    "readback",
    "rebuild",
    "rebuild_scan",
    "reconcile",
    "records",
    "reserve",
    "routing",
    "schema",
    "space",
    "spool_ids",
    "states",
]
