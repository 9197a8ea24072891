"""Held captures: listing them, assigning them to a session, letting the hold expire.

A capture with no session on its device is HELD (``[context] hold_unidentified``
> 0), as is one whose device named another patient than the session's. A
technician assigns held captures to a session (an existing one, or one opened from
the same kinds of request as the page's "Start a patient") in one all-or-nothing
action: they get the session's context and UIDs (same SOP Instance UIDs) and go to
be wrapped. Captures already wrapped but sent nowhere yet can be moved the same
way (their DICOM file is deleted and written again); once a destination stored
one, the box never changes it (corrections belong to the PACS). When the hold
expires, a capture goes out with the temporary patient (never a guessed one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.context.binding import series_kind, session_uids
from gateway.context.desk import (
    Actor,
    ContextError,
    ContextErrorCode,
    HeldView,
    SessionRequest,
)
from gateway.context.naming import capture_site, sensitive_codes
from gateway.context.session_desk import SessionDesk
from gateway.core.capture import GatewayIdentity, InstanceUIDs
from gateway.core.context import CaptureContext
from gateway.core.events import CapturesReleased
from gateway.core.routing import RoutePlan
from gateway.dicom.job import WrapJob
from gateway.dicom.retarget import retarget
from gateway.spool import held as db
from gateway.spool.capture_marks import flag_sensitive, is_sensitive, set_sensitive
from gateway.spool.captures import SpoolEntry
from gateway.spool.routing import Rerouted, reroute
from gateway.spool.sessions import series_for
from gateway.spool.states import CaptureState

__all__ = ["HoldDesk", "expiry_text"]

log = logging.getLogger("gateway.context")

_MOVABLE = (CaptureState.HELD, CaptureState.WRAPPED)


def _log_rerouted(changes: Rerouted) -> None:
    """Say what routing again after a flag or a move changed (the audit trail beside
    the flag's or the move's line)."""
    for spool_id, name in changes.withdrawn:
        log.warning("spool id %d: no longer sent to %s (its routes exclude it now)", spool_id, name)
    for spool_id, name in changes.already_sent:
        log.warning(
            "spool id %d: its routes exclude %s now, but %s already has it", spool_id, name, name
        )
    for spool_id, name in changes.added:
        log.info("spool id %d: now also sent to %s (its routes)", spool_id, name)
    for spool_id in changes.unrouted:
        log.warning("spool id %d: set aside, no route sends it anywhere now", spool_id)


def expiry_text(received_at: str, hold: int) -> str | None:
    """When a capture received at ``received_at`` stops being held (ledger time text)."""
    try:
        then = datetime.fromisoformat(received_at)
    except ValueError:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return (then + timedelta(seconds=hold)).isoformat(timespec="milliseconds")


class HoldDesk(SessionDesk):
    """The held-capture operations of :class:`~gateway.context.desk.ContextDesk`."""

    async def held(self) -> list[HeldView]:
        """Captures held for want of a patient, oldest first (no patient data)."""
        hold = self._config.context.hold_unidentified
        return [
            HeldView(
                spool_id=r.spool_id,
                device=r.device,
                received_at=r.received_at,
                reason=r.reason,
                expires_at=expiry_text(r.received_at, hold) if hold > 0 else None,
            )
            for r in await self._ledger.call(db.held_rows)
        ]

    async def assign(
        self,
        spool_ids: list[int],
        session_id: int | None,
        request: tuple[str, SessionRequest] | None,
        actor: Actor,
    ) -> list[int]:
        """Give held (or wrapped-but-unsent) captures a session's context, all or none."""
        if not spool_ids or len(set(spool_ids)) != len(spool_ids):
            raise ContextError(ContextErrorCode.BAD_REQUEST, "name each capture once")
        if (session_id is None) == (request is None):
            raise ContextError(
                ContextErrorCode.BAD_REQUEST, "name a session, or a patient for a new one"
            )
        candidates = await self._ledger.call(db.move_candidates, spool_ids)
        for spool_id in spool_ids:
            self._check_movable(spool_id, candidates.get(spool_id))
        if session_id is not None:
            session = await self._open_row(session_id)
        else:
            assert request is not None
            device, wanted = request
            opened = await self.open_session(device, wanted, actor)
            session = await self._session_row(opened.id)
        moves: list[db.Move] = []
        try:
            for spool_id in spool_ids:
                candidate = candidates[spool_id]
                entry = candidate.entry
                series, number = None, None
                if not candidate.driver_series:
                    series, number = await self._ledger.call(
                        series_for, session.id, series_kind(entry.offer)
                    )
                flagged = await self._ledger.call(is_sensitive, spool_id)
                context = await self._capture_context(
                    session, entry.device, entry.offer, number, flagged, series_uid=series
                )
                uids = session_uids(session, entry.uids, series)
                rewritten = None
                if entry.state is CaptureState.WRAPPED and not entry.raw_name and entry.dicom_name:
                    rewritten = await self._retarget(entry, context, uids)
                moves.append(
                    db.Move(
                        spool_id=spool_id,
                        state=entry.state,
                        old_study=entry.uids.study,
                        context=context,
                        uids=uids,
                        retargeted=rewritten,
                    )
                )
        except ContextError:  # one file could not be rewritten: nothing moves
            await asyncio.to_thread(_discard, [m.retargeted for m in moves])
            raise
        try:
            # Moved and routed again in one ledger call: a capture moved into a sensitive
            # session loses the deliveries its routes no longer allow before any is sent.
            plan = RoutePlan.from_config(self._config)
            changes = await self._ledger.call(
                db.move_captures_routed, moves, self._dicom_dir, plan, time.time()
            )
        except db.MoveRefused as err:
            await asyncio.to_thread(_discard, [m.retargeted for m in moves])
            raise ContextError(
                ContextErrorCode.NOT_HELD,
                f"spool id {err.spool_id} changed meanwhile (sent or wrapped); nothing was moved",
            ) from None
        log.info(
            "spool ids %s moved to session %d by %s",
            ",".join(str(i) for i in spool_ids),
            session.id,
            actor.label,
        )
        _log_rerouted(changes)
        self._bus.publish(CapturesReleased(count=len(spool_ids), how="assigned"))
        await self._first_capture(session)
        self._wake_wrapper()
        return list(spool_ids)

    @staticmethod
    def _check_movable(spool_id: int, candidate: db.Candidate | None) -> None:
        if candidate is None:
            raise ContextError(ContextErrorCode.NOT_HELD, f"no capture with spool id {spool_id}")
        entry = candidate.entry
        if candidate.sent or entry.state in (
            CaptureState.SENT,
            CaptureState.COMMITTED,
            CaptureState.PURGED,
        ):
            raise ContextError(
                ContextErrorCode.ALREADY_SENT,
                f"spool id {spool_id} was already sent; corrections belong to the PACS now",
            )
        if entry.state not in _MOVABLE:
            raise ContextError(
                ContextErrorCode.NOT_HELD,
                f"spool id {spool_id} is {entry.state.lower()}, not held or waiting to be sent",
            )

    async def _retarget(
        self, entry: SpoolEntry, context: CaptureContext, uids: InstanceUIDs
    ) -> Path:
        """A capture written as DICOM on arrival has no raw file to wrap again: its
        file is rewritten with the new context beside the old one (same SOP Instance
        UID, pixel data copied as it is); the move puts it in place as it commits."""
        assert entry.dicom_name is not None
        source = self._dicom_dir / entry.dicom_name
        dest = source.with_name(f"{entry.dicom_name}.moving")
        job = WrapJob(
            entry.device,
            entry.offer,
            uids,
            source,
            GatewayIdentity(gateway_id=self._gateway_id, software_version=""),
            datetime.now().astimezone(),
            context=context,
        )
        try:
            await asyncio.to_thread(retarget, source, dest, job, previous=entry.context)
        except ValueError:
            raise ContextError(
                ContextErrorCode.NOT_HELD,
                f"spool id {entry.spool_id}: its DICOM file is not the one it was written "
                "as; nothing was moved",
            ) from None
        except OSError as err:
            raise ContextError(
                ContextErrorCode.NOT_HELD,
                f"spool id {entry.spool_id}: its DICOM file cannot be rewritten "
                f"({err.strerror or type(err).__name__}); nothing was moved",
            ) from None
        return dest

    async def flag_capture(self, spool_id: int, sensitive: bool, actor: Actor) -> bool:
        """Flag (or unflag) one capture as sensitive. Its object carries the change
        (the Sensitive Content Code Sequence) when it has not left the box and has a
        patient context: a waiting object is rewritten, a held one gets it when it is
        assigned; True then. False: only the mark on the box changed (the capture was
        sent, or has no patient session: corrections belong to the PACS)."""
        candidates = await self._ledger.call(db.move_candidates, [spool_id])
        candidate = candidates.get(spool_id)
        if candidate is None:
            raise ContextError(ContextErrorCode.NOT_HELD, f"no capture with spool id {spool_id}")
        plan = RoutePlan.from_config(self._config)
        if sensitive:  # its routes drop what they no longer allow, before anything is sent
            await self._routed(flag_sensitive, spool_id, True, plan, time.time())
        else:  # destinations come back once the object's context (session, site) is settled
            await self._ledger.call(set_sensitive, spool_id, False)
        log.info(
            "spool id %d %s as sensitive by %s",
            spool_id,
            "flagged" if sensitive else "unflagged",
            actor.label,
        )
        try:
            return await self._flag_object(candidate, sensitive)
        finally:
            await self._routed(reroute, plan, time.time(), [spool_id])

    async def _routed(self, change: Callable[..., Rerouted], *args: object) -> None:
        """Run a routing change on the ledger thread, say what it did, wake the senders."""
        changes = await self._ledger.call(change, *args)
        _log_rerouted(changes)
        if changes.added or changes.released:
            self._wake_wrapper()  # (the service wakes the forwarders with it)

    async def _flag_object(self, candidate: db.Candidate, sensitive: bool) -> bool:
        """Carry a flag into the capture's object when it can (see :meth:`flag_capture`)."""
        entry = candidate.entry
        spool_id = entry.spool_id
        if entry.state is CaptureState.HELD:
            return True  # its context is made when it is assigned, with the flag
        if (
            entry.context is None
            or entry.session_id is None
            or candidate.sent
            or entry.state not in (CaptureState.CAPTURED, CaptureState.WRAPPED)
        ):
            return False
        session = await self._session_row(entry.session_id)
        context = replace(
            entry.context,
            sensitive=sensitive_codes(
                self._config.context.sensitive,
                *capture_site(entry.offer.anatomic_site, entry.context.lesion),
                session.sensitive or sensitive,
            ),
        )
        rewritten = None
        if entry.state is CaptureState.WRAPPED and entry.dicom_name:
            rewritten = await self._retarget(entry, context, entry.uids)
        move = db.Move(
            spool_id=spool_id,
            state=entry.state,
            old_study=entry.uids.study,
            context=context,
            uids=entry.uids,
            retargeted=rewritten,
        )
        try:
            await self._ledger.call(db.move_captures, [move], self._dicom_dir)
        except db.MoveRefused:
            await asyncio.to_thread(_discard, [rewritten])
            return False
        if rewritten is None:
            self._wake_wrapper()
        return True

    async def expire_held(self, now: datetime | None = None) -> int:
        """Release captures held longer than ``hold_unidentified`` (to the temporary
        patient); how many were released."""
        hold = self._config.context.hold_unidentified
        moment = now or datetime.now(UTC)
        cutoff = (moment - timedelta(seconds=hold)).isoformat(timespec="milliseconds")
        released = await self._ledger.call(db.release_expired, cutoff)
        if released:
            log.info(
                "%d held capture(s) released unassigned after %d s (spool ids %s); "
                "they go out under a temporary patient",
                len(released),
                hold,
                ",".join(str(i) for i in released),
            )
            self._bus.publish(CapturesReleased(count=len(released), how="expired"))
            self._wake_wrapper()
        return len(released)


def _discard(paths: list[Path | None]) -> None:
    """Remove rewritten files a refused move left beside the originals."""
    for path in paths:
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
