"""What every part of the context stage shares: its inputs and the session views.

:class:`StageBase` holds the ledger, the configuration and the hooks the stage was
built with; the parts (:mod:`gateway.context.holding`, the lesion desk, the
session desk in :mod:`gateway.context.stage`) are mixins over it, so each stays
small and all see the same attributes:

``_ledger`` (:class:`~gateway.spool.ledger.Ledger`), ``_config``
(:class:`~gateway.core.config.DermGateConfig`), ``_gateway_id``, ``_bus``,
``_wake_wrapper()``, ``_reserve_spool_id()``, ``_steps`` (MPPS hooks or None),
``_worklist`` (the worklist refresher or None), ``_dicom_dir``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from gateway.context.desk import (
    ContextError,
    ContextErrorCode,
    LesionView,
    ProcedureStepHooks,
    SessionView,
)
from gateway.context.naming import site_meaning
from gateway.core.config import DermGateConfig
from gateway.core.context import WorklistStatus
from gateway.core.events import EventSink
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import Ledger
from gateway.spool.sessions import SessionRow, capture_counts, get_session, lesion_context_of

__all__ = ["StageBase", "WorklistRefresher"]

log = logging.getLogger("gateway.context")


class WorklistRefresher(Protocol):
    """The worklist client the stage is given (:mod:`gateway.context.worklist`)."""

    async def refresh(self) -> WorklistStatus:
        """Query the SCP now and replace the cache; the cache's state after it."""
        ...

    def status(self) -> WorklistStatus:
        """The cache's state (no patient data)."""
        ...


class StageBase:
    """The context stage's inputs, and what its parts share."""

    def __init__(
        self,
        ledger: Ledger,
        config: DermGateConfig,
        gateway_id: str,
        bus: EventSink,
        wake_wrapper: Callable[[], None],
        reserve_spool_id: Callable[[], Awaitable[int]],
        steps: ProcedureStepHooks | None = None,
        worklist: WorklistRefresher | None = None,
    ) -> None:
        self._ledger = ledger
        self._config = config
        self._gateway_id = gateway_id
        self._bus = bus
        self._wake_wrapper = wake_wrapper
        self._reserve_spool_id = reserve_spool_id
        self._steps = steps
        self._worklist = worklist
        self._dicom_dir: Path = SpoolDirs(config.spool_dir()).dicom
        self._started: set[int] = set()  # worklist sessions whose first capture was told

    def devices(self) -> list[str]:
        """The configured device names sessions can be opened on."""
        return [self._config.device_name(i) for i in range(len(self._config.devices))]

    def _check_device(self, device: str) -> None:
        if device not in self.devices():
            raise ContextError(ContextErrorCode.UNKNOWN_DEVICE, "no device of that name")

    async def _session_row(self, session_id: int) -> SessionRow:
        row = await self._ledger.call(get_session, session_id)
        if row is None:
            raise ContextError(ContextErrorCode.NO_SUCH_SESSION, f"no session {session_id}")
        return row

    async def _open_row(self, session_id: int) -> SessionRow:
        row = await self._session_row(session_id)
        if row.closed_at is not None:
            raise ContextError(ContextErrorCode.SESSION_CLOSED, f"session {session_id} has ended")
        return row

    async def _lesion_view(self, lesion_id: int | None) -> LesionView | None:
        lesion = await self._ledger.call(lesion_context_of, lesion_id)
        if lesion is None or lesion_id is None:
            return None
        return LesionView(
            id=lesion_id,
            tracking_id=lesion.tracking_id,
            tracking_uid=lesion.tracking_uid,
            site=lesion.site,
            site_scheme=lesion.site_scheme,
            site_meaning=site_meaning(lesion.site, lesion.site_scheme),
            laterality=lesion.laterality,
            description=lesion.description,
        )

    async def _views(self, rows: list[SessionRow]) -> list[SessionView]:
        counts = await self._ledger.call(capture_counts, [r.id for r in rows])
        views = []
        for row in rows:
            order = row.order
            request = order.request if order is not None else None
            views.append(
                SessionView(
                    id=row.id,
                    device=row.device,
                    source=row.source,
                    patient=row.patient,
                    study_uid=row.study_uid,
                    accession_number=order.accession_number if order is not None else "",
                    procedure=(
                        request.requested_procedure_description
                        if request is not None
                        else row.study_description
                    ),
                    opened_at=row.opened_at,
                    opened_by=row.opened_by,
                    operator_name=row.operator_name,
                    closed_at=row.closed_at,
                    lesion=await self._lesion_view(row.lesion_id),
                    sensitive=row.sensitive,
                    captures=counts.get(row.id, 0),
                )
            )
        return views

    async def _view(self, row: SessionRow) -> SessionView:
        return (await self._views([row]))[0]

    async def _first_capture(self, session: SessionRow) -> None:
        """Tell MPPS about a worklist session's first capture (once per run; the
        hook is idempotent across restarts)."""
        if self._steps is None or session.worklist_key is None or session.id in self._started:
            return
        self._started.add(session.id)
        try:
            await self._steps.first_capture(session.id)
        except Exception as err:  # MPPS must never cost a capture: it queues and retries
            log.error(
                "session %d: could not report its first capture to MPPS (%s)",
                session.id,
                type(err).__name__,
            )
