"""Server-rendered HTML of one session's page: the patient, the lesion for the
following captures (pick one of the patient's or add one by tapping the body map or
searching the site list), the sensitive flag, "move captures" and "End".

Shown to a logged-in user only (patient data). Regions of the body map are plain
links (``?site=...&laterality=...``), so tapping one works without JavaScript; the
confirmation form then adds the lesion with a POST carrying the CSRF token.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from urllib.parse import urlencode

from gateway.context import body_map
from gateway.context.body_map import BodyRegion
from gateway.context.desk import LesionView, SessionView
from gateway.context.sites import Site, search_sites
from gateway.context.sites import site as find_site
from gateway.core.capture import Laterality
from gateway.status.web.context_pages import SENSITIVE_MARK, SIDES, patient_block
from gateway.status.web.pages import _e, csrf_field, layout

__all__ = ["body_map_svg", "lesion_page", "session_page"]

_SIDE = SIDES


def _lesion_text(les: LesionView) -> str:
    side = f" · {_SIDE[les.laterality]}" if les.laterality else ""
    desc = f" · {les.description}" if les.description else ""
    return f"{les.site_meaning or les.site or 'site unknown'}{side}{desc}"


def session_page(
    view: SessionView,
    lesions: Sequence[LesionView],
    user: str,
    csrf: str,
    message: str = "",
    lesion_note: str = "",
) -> str:
    """The session: patient, lesion choice, sensitive flag, move, End (at the bottom).
    An ended session shows the patient and "move" only."""
    note = f'<p class="notice" role="status">{_e(message)}</p>' if message else ""
    if view.closed_at is not None:
        body = (
            f'<section class="session" data-session="{view.id}"><h2>{_e(view.device)}</h2>'
            f"{note}{patient_block(view.patient, view.procedure, view.accession_number)}"
            f"<p>Ended {_e(view.closed_at)} · {view.captures} capture(s)</p></section>"
            f'<section class="bottom"><a class="button" href="/sessions/{view.id}/move">'
            'Move unsent captures to another patient</a><a class="button" href="/">'
            "Overview</a></section>"
        )
        return layout(f"Patient on {view.device}", body, user, csrf)
    chosen = view.lesion.id if view.lesion else None
    items = "".join(
        f'<li><form method="post" action="/sessions/{view.id}/lesion">{csrf_field(csrf)}'
        f'<input type="hidden" name="tracking_id" value="{_e(les.tracking_id)}">'
        f'<button type="submit" class="pick{" chosen" if les.id == chosen else ""}" '
        f'data-lesion="{_e(les.tracking_id)}"><b>{_e(les.tracking_id)}</b> '
        f"<span>{_e(_lesion_text(les))}</span>"
        f"{' <em>(now)</em>' if les.id == chosen else ''}</button></form></li>"
        for les in lesions
    )
    now = (
        f'<p id="current-lesion">Now: <b>{_e(view.lesion.tracking_id)}</b> '
        f"{_e(_lesion_text(view.lesion))}</p>"
        if view.lesion
        else '<p id="current-lesion">Now: no lesion chosen</p>'
    )
    problem = f'<p class="error" role="alert">{_e(lesion_note)}</p>' if lesion_note else ""
    flag = "0" if view.sensitive else "1"
    flag_text = "Sensitive: on (tap to turn off)" if view.sensitive else "Mark as sensitive"
    body = (
        f'<section class="session" data-session="{view.id}"><h2>{_e(view.device)}</h2>{note}'
        f"{patient_block(view.patient, view.procedure, view.accession_number)}"
        f"{SENSITIVE_MARK if view.sensitive else ''}"
        f"<p>{view.captures} capture(s) so far · opened {_e(view.opened_at)}</p></section>"
        f'<section class="lesions"><h3>Lesion for the next captures</h3>{now}'
        f"{problem}"
        f'<ul class="picklist">{items or "<li>No lesion recorded for this patient yet.</li>"}'
        f'</ul><a class="button" id="add-lesion" href="/sessions/{view.id}/lesion">'
        "Add a lesion (body map)</a></section>"
        f'<section><h3>Sensitive content</h3><form method="post" '
        f'action="/sessions/{view.id}/sensitive">{csrf_field(csrf)}'
        f'<input type="hidden" name="sensitive" value="{flag}">'
        f'<button type="submit" id="sensitive">{flag_text}</button></form>'
        "<p><small>Applies to the following captures of this session.</small></p></section>"
        f'<section class="bottom"><a class="button" href="/sessions/{view.id}/move">'
        "Move unsent captures to another patient</a>"
        f'<form method="post" action="/sessions/{view.id}/end">{csrf_field(csrf)}'
        '<button type="submit" class="danger" id="end">End this patient</button></form>'
        "</section>"
    )
    return layout(f"Patient on {view.device}", body, user, csrf)


def _href(view: SessionView, region: BodyRegion) -> str:
    query = urlencode({"site": region.site_ref, "laterality": region.laterality.value})
    return f"/sessions/{view.id}/lesion?{query}"


def body_map_svg(view: SessionView) -> str:
    """Front and back outlines (:mod:`gateway.context.body_map`); each region a link
    choosing its site and laterality."""
    href = functools.partial(_href, view)
    front = body_map.body_map_svg("front", href=href)
    back = body_map.body_map_svg("back", href=href)
    figures = (
        f'<figure class="bodymap">{front}<figcaption>Front: the patient\'s right is on your '
        "left</figcaption></figure>"
        f'<figure class="bodymap">{back}<figcaption>Back: the patient\'s right is on your '
        "right</figcaption></figure>"
    )
    return f'<div class="bodymaps">{figures}</div>'


def _confirm_form(view: SessionView, site: Site, laterality: str, csrf: str) -> str:
    options = "".join(
        f'<option value="{lat.value}"{" selected" if lat.value == laterality else ""}>'
        f"{_SIDE[lat]}</option>"
        for lat in (Laterality.RIGHT, Laterality.LEFT, Laterality.UNPAIRED, Laterality.BOTH)
    )
    return (
        f'<section class="confirm" id="new-lesion"><h3>New lesion: {_e(site.meaning)}</h3>'
        f'<form method="post" action="/sessions/{view.id}/lesion">{csrf_field(csrf)}'
        f'<input type="hidden" name="site" value="{_e(site.ref)}">'
        f'<label>Side <select name="laterality">{options}</select></label>'
        '<label>Description (optional) <input name="description" maxlength="64" '
        'autocomplete="off"></label>'
        '<button type="submit" class="primary" id="add">Add this lesion</button>'
        f'<a class="button" href="/sessions/{view.id}/lesion">Cancel: back to the body map</a>'
        "</form></section>"
    )


def _site_list(listing: str, find: str, count: int) -> str:
    if not listing:
        return '<ul class="sites"><li>No site matches.</li></ul>'
    if find:
        return f'<ul class="sites">{listing}</ul>'
    return (
        f'<details><summary>All {count} sites</summary><ul class="sites">{listing}</ul></details>'
    )


def lesion_page(
    view: SessionView,
    find: str,
    site: str | None,
    laterality: str,
    user: str,
    csrf: str,
    message: str = "",
) -> str:
    """Add a lesion: tap the body map or search the site list; then confirm."""
    note = f'<p class="error" role="alert">{_e(message)}</p>' if message else ""
    chosen = find_site(site) if site else None
    confirm = _confirm_form(view, chosen, laterality, csrf) if chosen else ""
    found = search_sites(find)
    listing = "".join(
        f'<li><a class="site" href="/sessions/{view.id}/lesion?'
        f'{_e(urlencode({"site": s.ref, "find": find}))}">{_e(s.meaning)}</a></li>'
        for s in found
    )
    body = (
        f"<section><h2>Add a lesion</h2>{note}"
        f"{patient_block(view.patient, view.procedure, view.accession_number)}</section>"
        f"{confirm}"
        "<section><h3>Tap where the lesion is</h3>"
        f"{body_map_svg(view)}</section>"
        "<section><h3>Or find the site</h3>"
        f'<form method="get" action="/sessions/{view.id}/lesion" class="search">'
        f'<label>Site <input type="search" name="find" value="{_e(find)}" '
        'autocomplete="off"></label><button type="submit">Find</button></form>'
        f"{_site_list(listing, find, len(found))}</section>"
        f'<p><a class="button" href="/sessions/{view.id}">Back to the patient</a></p>'
    )
    return layout("Add a lesion", body, user, csrf)
