"""The context stage: patient sessions, binding captures at intake, held captures.

:class:`ContextStage` is the :class:`~gateway.context.desk.ContextDesk` the page,
the API and barcode scanners use, and the
:class:`~gateway.core.context.ContextBinder` intake asks when a device starts
sending a capture. Its parts are mixins over :class:`~gateway.context.base.StageBase`:
sessions (:mod:`gateway.context.session_desk`), held captures
(:mod:`gateway.context.holding`) and lesions (:mod:`gateway.context.lesion_desk`).
``run`` lets holds expire.

Binding (:meth:`ContextStage.bind`) uses the session open on the device when it
**starts** sending (a capture that straddles a switch belongs to the old session):

* a session is open: :class:`Bound` with its context, the session's study, its
  series for the kind of object (a driver-chosen series is kept: a 3D export keeps
  its mesh/material/texture series; every file of one export gets the study its
  first file got), the same SOP Instance UID; unless the device named another
  patient, which holds the capture ("assign it on the page");
* none is open: the device's own patient when it named one (``None``: as before
  sessions), else :class:`Held` while ``[context] hold_unidentified`` > 0, else
  ``None`` (the temporary patient).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.context.binding import patient_differs, series_kind, session_uids
from gateway.context.holding import HoldDesk
from gateway.context.lesion_desk import LesionDesk
from gateway.core.capture import CaptureOffer, DeviceIdentity, InstanceUIDs
from gateway.core.context import Binding, Bound, Held
from gateway.spool import sessions as db

__all__ = ["MISMATCH_REASON", "ContextStage"]

log = logging.getLogger("gateway.context")

MISMATCH_REASON = "the device's patient differs from the session's patient; assign it on the page"

_POLL_MIN = 1.0
_POLL_MAX = 30.0


class ContextStage(HoldDesk, LesionDesk):
    """Patient sessions and capture binding (see the module docstring).

    Built with ``(ledger, config, gateway_id, bus, wake_wrapper, reserve_spool_id,
    steps=None, worklist=None)`` (:class:`~gateway.context.base.StageBase`).
    """

    async def bind(
        self,
        device_name: str,
        identity: DeviceIdentity,
        offer: CaptureOffer,
        uids: InstanceUIDs,
    ) -> Binding:
        """The binding of a capture ``device_name`` starts sending now."""
        session: db.SessionRow | None = None
        if offer.uids is not None:  # a driver-chosen study: its first file decides
            known, session_id = await self._ledger.call(db.export_binding, offer.uids.study)
            if known:
                if session_id is not None:
                    session = await self._ledger.call(db.get_session, session_id)
            else:
                session = await self._ledger.call(db.open_session_of, device_name)
                await self._ledger.call(
                    db.record_export_binding,
                    offer.uids.study,
                    None if session is None else session.id,
                )
        else:
            session = await self._ledger.call(db.open_session_of, device_name)
        if session is None:
            if offer.patient is not None and offer.patient.patient_id.strip():
                return None  # the device named its patient: as before sessions
            if self._config.context.hold_unidentified > 0:
                return Held(f"no patient session was open on {device_name}")
            return None
        if patient_differs(offer, session):
            return Held(MISMATCH_REASON)
        series, number = None, None
        if offer.uids is None:
            series, number = await self._ledger.call(db.series_for, session.id, series_kind(offer))
        context = await self._capture_context(session, identity, offer, number, series_uid=series)
        await self._first_capture(session)
        return Bound(context, session_uids(session, uids, series))

    async def run(self, ready: Callable[[], None]) -> None:
        """Let holds expire (every few seconds), until cancelled."""
        hold = self._config.context.hold_unidentified
        poll = min(_POLL_MAX, max(_POLL_MIN, hold / 20))
        await self.expire_held()  # left from a run with a longer hold, or none at all
        ready()
        while True:
            await asyncio.sleep(poll)
            await self.expire_held()
