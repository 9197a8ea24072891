"""Intake: where device bytes become a durable, acknowledged capture.

A driver streams a capture into a sink from :meth:`Intake.host_for`'s host; on
``commit`` the bytes are fsynced into the spool and the ledger row is committed,
and only then may the driver tell the device "saved" (:mod:`.staging`). A JPEG
may be written straight into its DICOM file on the way (:class:`InlineWrap`, one
copy on disk; :mod:`gateway.dicom.writers` decides whether, and as which object);
anything else waits in ``raw/`` for the wrapping stage. Hands work
over through the ledger only.
"""

from gateway.intake.intake import Intake
from gateway.intake.stage import InlineWrap

__all__ = ["InlineWrap", "Intake"]
