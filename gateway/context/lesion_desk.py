"""The lesion part of the context desk: choose, find or create a session's lesion.

:class:`LesionDesk` is a mixin of the context stage (:mod:`gateway.context.stage`):
it implements :meth:`ContextDesk.set_lesion <gateway.context.desk.ContextDesk.set_lesion>`
and :meth:`ContextDesk.lesions <gateway.context.desk.ContextDesk.lesions>` and needs
of its host only ``_ledger`` (:class:`LesionHost`).

Rules:

* ``tracking_id`` picks an existing lesion of the session's patient (exact label);
  an unknown one is refused (``BAD_LESION``), never created.
* ``site`` (a CID 4029 code: ``SCT:66643007`` or a bare ``66643007``; anything else is
  ``UNKNOWN_SITE``), ``laterality`` (R, L, B, U) and an optional ``description`` (at
  most 64 printable characters) name a lesion: the patient's lesion with exactly that
  site, laterality and description if there is one, else a **new** lesion with the
  next free label (``L01``, ``L02``…) and a new Tracking UID. A second mole on the
  same site is told apart by its description.
* The chosen lesion becomes the session's current one: the device's following
  captures carry it until another is chosen. A closed session refuses
  (``SESSION_CLOSED``).

A session of an **unidentified** (temporary) patient has a registry of its own: its
lesions are real lesions of that temporary Patient ID, but they will not follow the
person once identified (a later session under the real Patient ID starts another
registry; the PACS reconciles the temporary patient, not the box).
"""

from __future__ import annotations

import sqlite3
from typing import Final, Protocol

from gateway.context.desk import (
    Actor,
    ContextError,
    ContextErrorCode,
    LesionRequest,
    LesionView,
)
from gateway.context.sites import Site, site
from gateway.core.capture import Laterality
from gateway.spool import lesions as registry
from gateway.spool.ledger import Ledger
from gateway.spool.schema import transaction

__all__ = ["DESCRIPTION_MAX", "LesionDesk", "LesionHost", "lesion_view"]

#: The longest lesion description accepted.
DESCRIPTION_MAX: Final = 64


class LesionHost(Protocol):
    """What :class:`LesionDesk` needs of the class that mixes it in."""

    _ledger: Ledger


def lesion_view(row: registry.LesionRow) -> LesionView:
    """The page's and API's view of a registry row (with the site's meaning)."""
    found = site(f"{row.site_scheme}:{row.site}") if row.site else None
    return LesionView(
        id=row.id,
        tracking_id=row.tracking_id,
        tracking_uid=row.tracking_uid,
        site=row.site,
        site_scheme=row.site_scheme,
        site_meaning=found.meaning if found is not None else "",
        laterality=row.laterality,
        description=row.description,
    )


def _refuse(code: ContextErrorCode, message: str) -> ContextError:
    return ContextError(code, message)


def _target(conn: sqlite3.Connection, session_id: int) -> registry.SessionTarget:
    target = registry.session_target(conn, session_id)
    if target is None:
        raise _refuse(ContextErrorCode.NO_SUCH_SESSION, "there is no such session")
    if not target.patient_id:
        raise _refuse(ContextErrorCode.BAD_PATIENT, "the session has no Patient ID")
    return target


def _choose(
    conn: sqlite3.Connection,
    session_id: int,
    tracking_id: str | None,
    chosen_site: Site | None,
    laterality: Laterality | None,
    description: str,
) -> registry.LesionRow:
    """On the ledger thread, in one transaction: find or create the lesion and make it
    the session's (a refusal rolls back whatever it would have created)."""
    with transaction(conn):
        return _choose_in(conn, session_id, tracking_id, chosen_site, laterality, description)


def _choose_in(
    conn: sqlite3.Connection,
    session_id: int,
    tracking_id: str | None,
    chosen_site: Site | None,
    laterality: Laterality | None,
    description: str,
) -> registry.LesionRow:
    target = _target(conn, session_id)
    if target.closed:
        raise _refuse(ContextErrorCode.SESSION_CLOSED, "the session has ended")
    if tracking_id is not None:
        row = registry.lesion_by_tracking_id(conn, target.patient_id, target.issuer, tracking_id)
        if row is None:
            raise _refuse(
                ContextErrorCode.BAD_LESION, "the patient has no lesion with that tracking id"
            )
    else:
        assert chosen_site is not None
        row, _created = registry.find_or_create_lesion(
            conn,
            target.patient_id,
            target.issuer,
            site=chosen_site.value,
            site_scheme=chosen_site.scheme,
            laterality=laterality,
            description=description,
        )
    if not registry.set_session_lesion(conn, session_id, row.id):
        raise _refuse(ContextErrorCode.SESSION_CLOSED, "the session has ended")
    return row


def _list(conn: sqlite3.Connection, session_id: int) -> list[registry.LesionRow]:
    target = _target(conn, session_id)
    return registry.patient_lesions(conn, target.patient_id, target.issuer)


def _checked(request: LesionRequest) -> tuple[str | None, Site | None, Laterality | None, str]:
    """The request's (tracking id, site, laterality, description), validated."""
    tracking_id = request.tracking_id.strip() if request.tracking_id is not None else None
    has_site = request.site is not None and request.site.strip() != ""
    if tracking_id is not None and has_site:
        raise _refuse(ContextErrorCode.BAD_LESION, "give a tracking id or a site, not both")
    if tracking_id is not None:
        if not tracking_id:
            raise _refuse(ContextErrorCode.BAD_LESION, "the tracking id is empty")
        return tracking_id, None, None, ""
    if request.site is None or not has_site:
        raise _refuse(ContextErrorCode.BAD_LESION, "give a tracking id or an anatomic site")
    chosen = site(request.site)
    if chosen is None:
        raise _refuse(
            ContextErrorCode.UNKNOWN_SITE,
            "the anatomic site is not a CID 4029 (dermatology anatomic site) code",
        )
    laterality: Laterality | None = None
    if request.laterality is not None:
        try:
            laterality = Laterality(request.laterality)
        except ValueError:
            raise _refuse(ContextErrorCode.BAD_LESION, "laterality must be R, L, B or U") from None
    description = request.description.strip()
    if len(description) > DESCRIPTION_MAX:
        raise _refuse(
            ContextErrorCode.BAD_LESION,
            f"the description is longer than {DESCRIPTION_MAX} characters",
        )
    if not description.isprintable():
        raise _refuse(ContextErrorCode.BAD_LESION, "the description has control characters")
    return None, chosen, laterality, description


class LesionDesk:
    """Mixin: :meth:`set_lesion` and :meth:`lesions` of the context desk."""

    _ledger: Ledger

    async def set_lesion(self, session_id: int, request: LesionRequest, actor: Actor) -> LesionView:
        """Choose (find or create) the lesion for the session's following captures."""
        del actor  # who chose is not recorded: the lesion is not patient identity
        tracking_id, chosen, laterality, description = _checked(request)
        row = await self._ledger.call(
            _choose, session_id, tracking_id, chosen, laterality, description
        )
        return lesion_view(row)

    async def lesions(self, session_id: int) -> list[LesionView]:
        """The registry of the session's patient, oldest lesion first."""
        rows = await self._ledger.call(_list, session_id)
        return [lesion_view(r) for r in rows]
