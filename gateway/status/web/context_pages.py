"""Server-rendered HTML of the patient pages: sessions per device, starting a patient,
held captures, moving captures between sessions. Everything interpolated is escaped.

These pages show patient data (names, IDs, birth dates, procedures): they are
rendered only for a logged-in user (the page's guard sends anybody else to the login
page before a route runs). Every form that changes anything is a POST carrying the
CSRF token; the pages work without JavaScript. Lesions and the body map are in
:mod:`.lesion_pages`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from urllib.parse import quote

from gateway.context.barcode.stage import ScanNotice, ScanOutcome
from gateway.context.desk import HeldView, SessionView, WorklistEntry, WorklistStatus
from gateway.core.capture import Laterality, PatientContext
from gateway.spool.capture_marks import SessionCapture
from gateway.status.web.data import human_age
from gateway.status.web.pages import _e, csrf_field, layout

__all__ = [
    "SENSITIVE_MARK",
    "SIDES",
    "device_path",
    "held_page",
    "move_confirm_page",
    "move_page",
    "patient_block",
    "person",
    "sessions_fragment",
    "start_page",
    "unused_scan",
]

SENSITIVE_MARK = '<span class="sensitive" title="sensitive">Sensitive</span>'
_SEX = {"F": "female", "M": "male", "O": "other"}
#: Laterality as the page says it.
SIDES = {
    Laterality.RIGHT: "right",
    Laterality.LEFT: "left",
    Laterality.BOTH: "both sides",
    Laterality.UNPAIRED: "midline",
}


def device_path(device: str) -> str:
    """The start page of ``device`` (its name quoted for the path)."""
    return f"/devices/{quote(device, safe='')}/start"


def person(name: str) -> str:
    """A DICOM person name for people: ``Family^Given^Middle`` → ``Family, Given Middle``."""
    parts = [p.strip() for p in name.split("=")[0].split("^")]
    family, rest = (parts[0], " ".join(p for p in parts[1:4] if p)) if parts else ("", "")
    if family and rest:
        return f"{family}, {rest}"
    return family or rest or "(no name)"


def _date(value: str) -> str:
    v = value.strip()
    return f"{v[:4]}-{v[4:6]}-{v[6:8]}" if len(v) == 8 and v.isdigit() else v


def _facts(patient: PatientContext) -> str:
    issuer = f" ({patient.issuer_of_patient_id})" if patient.issuer_of_patient_id else ""
    born = f"born {_date(patient.birth_date)}" if patient.birth_date else "birth date unknown"
    sex = _SEX.get(patient.sex.upper(), "sex unknown")
    return f"ID {patient.patient_id}{issuer} · {born} · {sex}"


def patient_block(patient: PatientContext, procedure: str, accession: str = "") -> str:
    """Name (large), ID with issuer, birth date, sex, procedure: enough to tell
    look-alikes apart."""
    order = " · ".join(x for x in (procedure, f"Acc. {accession}" if accession else "") if x)
    return (
        f'<div class="patient"><b class="name">{_e(person(patient.patient_name))}</b>'
        f'<span class="facts">{_e(_facts(patient))}</span>'
        f'<span class="order">{_e(order or "no procedure")}</span></div>'
    )


def _lesion_line(view: SessionView) -> str:
    if view.lesion is None:
        return '<p class="lesion">No lesion chosen</p>'
    les = view.lesion
    side = f" · {SIDES[les.laterality]}" if les.laterality else ""
    return (
        f'<p class="lesion">Lesion <b>{_e(les.tracking_id)}</b> · '
        f"{_e(les.site_meaning or les.site or '')}{_e(side)}</p>"
    )


def _end_form(view: SessionView, csrf: str) -> str:
    return (
        f'<form method="post" action="/sessions/{view.id}/end" class="end">{csrf_field(csrf)}'
        f'<button type="submit" class="danger">End</button></form>'
    )


def sessions_fragment(
    devices: Sequence[str],
    sessions: Sequence[SessionView],
    held: int,
    csrf: str,
    error: str = "",
    worklist: WorklistStatus | None = None,
    now: float = 0.0,
    scans: Sequence[ScanNotice] = (),
) -> str:
    """Per device: the open session (patient, procedure, lesion) with "End", or
    "Start a patient"; a barcode scan that opened nothing; how many captures wait
    for a patient; a stale worklist."""
    by_device = {s.device: s for s in sessions if s.closed_at is None}
    cards = []
    for device in devices:
        view = by_device.get(device)
        scan = unused_scan(device, view, scans, now)
        if view is None:
            inner = (
                '<p class="none">No patient</p>'
                f'<a class="button primary" href="{device_path(device)}">Start a patient</a>'
            )
        else:
            mark = SENSITIVE_MARK if view.sensitive else ""
            inner = (
                f"{patient_block(view.patient, view.procedure, view.accession_number)}{mark}"
                f"{_lesion_line(view)}"
                f'<div class="actions"><a class="button" href="/sessions/{view.id}">'
                f"Lesion &amp; details</a>{_end_form(view, csrf)}</div>"
            )
        cards.append(
            f'<div class="device-session" data-device="{_e(device)}"><h4>{_e(device)}</h4>'
            f"{scan}{inner}</div>"
        )
    note = f'<p class="error" role="alert">{_e(error)}</p>' if error else ""
    if worklist is not None and worklist.stale:
        note += _worklist_status(worklist, now)
    waiting = (
        f'<a class="button held" href="/held">{held} capture(s) held: waiting for a patient</a>'
        if held
        else ""
    )
    return (
        f'<section id="sessions"><h3>Patients at the devices</h3>{note}'
        f"{''.join(cards)}{waiting}</section>"
    )


#: A scan that opened nothing is shown this long (seconds), unless a session opens after it.
SCAN_SHOWN = 600.0
_SCAN_WORDS = {
    ScanOutcome.NO_MATCH: "it does not fit this scanner's pattern",
    ScanOutcome.TYPED: "the keys came at a person's pace: typed, not scanned",
    ScanOutcome.TOO_LONG: "it is too long to be a patient's code",
    ScanOutcome.UNREADABLE: "characters were not readable (keyboard layout, or not text)",
    ScanOutcome.INCOMPLETE: "it did not end (no Enter): check the scanner's suffix",
}


def unused_scan(
    device: str, session: SessionView | None, scans: Sequence[ScanNotice], now: float
) -> str:
    """The newest scan for ``device`` when it opened nothing (patient data: the scanned
    text), as long as it is recent and no session was opened after it; else ""."""
    notice = next((n for n in scans if n.device == device), None)
    if notice is None or notice.outcome is ScanOutcome.MATCHED:
        return ""
    at = datetime.fromisoformat(notice.at)
    if now - at.timestamp() > SCAN_SHOWN:
        return ""
    if session is not None and datetime.fromisoformat(session.opened_at) >= at:
        return ""
    why = notice.message if notice.outcome is ScanOutcome.REFUSED else _SCAN_WORDS[notice.outcome]
    return (
        f'<p class="notice scan" role="alert" data-outcome="{_e(notice.outcome)}">'
        f"Scan not used ({_e(why)}): <b>{_e(notice.text)}</b> "
        f'<span class="when">{at.astimezone():%H:%M:%S}</span></p>'
    )


def _worklist_note(status: WorklistStatus | None, now: float, csrf: str, back: str) -> str:
    if status is None:
        return (
            '<p class="notice">No worklist server is configured: scan or type the patient in.</p>'
        )
    refresh = (
        f'<form method="post" action="/worklist/refresh" class="refresh">{csrf_field(csrf)}'
        f'<input type="hidden" name="back" value="{_e(back)}">'
        '<button type="submit">Refresh the worklist now</button></form>'
    )
    return _worklist_status(status, now) + refresh


def _worklist_status(status: WorklistStatus, now: float) -> str:
    age = status.age(now)
    if status.stale:
        when = "never fetched" if age is None else f"last updated {human_age(age)} ago"
        why = f" ({status.error})" if status.error else ""
        return (
            f'<p class="notice stale" role="status">The worklist is stale: {_e(when)}{_e(why)}. '
            "Check the patient carefully.</p>"
        )
    return f'<p class="fresh">{status.items} scheduled, updated {_e(human_age(age))} ago.</p>'


def _hidden(fields: Sequence[tuple[str, str]]) -> str:
    return "".join(f'<input type="hidden" name="{_e(k)}" value="{_e(v)}">' for k, v in fields)


def start_page(
    device: str,
    *,
    action: str,
    search_action: str,
    hidden: Sequence[tuple[str, str]],
    search: str,
    entries: Sequence[WorklistEntry],
    status: WorklistStatus | None,
    now: float,
    user: str,
    csrf: str,
    title: str = "",
    message: str = "",
    back: str = "/",
    current: SessionView | None = None,
) -> str:
    """Start a patient on ``device``: search the worklist and pick, scan, type in, or
    unidentified. ``action`` receives the POST (with ``hidden`` fields and ``mode``);
    ``back`` is where the worklist's refresh button returns to; ``current`` the
    device's open session, which starting another one ends."""
    post = f'<form method="post" action="{_e(action)}">{csrf_field(csrf)}{_hidden(hidden)}'
    note = f'<p class="error" role="alert">{_e(message)}</p>' if message else ""
    if current is not None:
        note += (
            f'<div class="notice" id="current">Open now on {_e(device)} (starting another '
            f"patient ends it):{patient_block(current.patient, current.procedure)}</div>"
        )
    items = "".join(
        f'<li>{post}<input type="hidden" name="mode" value="pick">'
        f'<input type="hidden" name="item" value="{_e(entry.key)}">'
        f'<button type="submit" class="pick" data-item="{_e(entry.key)}">'
        f"{patient_block(entry.patient, entry.requested_procedure_description or entry.sps_description, entry.accession_number)}"  # noqa: E501
        "</button></form></li>"
        for entry in entries
    )
    if status is not None or entries or search:
        found = items or f"<li>{'No match' if search else 'Nothing scheduled'}</li>"
        worklist = (
            f'<form method="get" action="{_e(search_action)}" class="search">'
            f"{_hidden([h for h in hidden if h[0] != 'csrf'])}"
            '<label>Name, ID, birth date or accession <input type="search" name="q" '
            f'value="{_e(search)}" autocomplete="off"></label>'
            '<button type="submit">Search</button></form>'
            f'<ul class="picklist" id="worklist">{found}</ul>'
        )
    else:
        worklist = ""
    body = (
        f'<section class="start"><h2>{_e(title or f"Start a patient on {device}")}</h2>{note}'
        f"{_worklist_note(status, now, csrf, back)}"
        f"<h3>From the worklist</h3>{worklist}"
        f'<h3>Scan</h3>{post}<input type="hidden" name="mode" value="scan">'
        '<label>Scan the barcode (or type it) <input name="code" id="scan" required '
        'autocomplete="off" autocapitalize="off" spellcheck="false"></label>'
        '<button type="submit" class="primary">Open</button></form>'
        f'<h3>Type in</h3>{post}<input type="hidden" name="mode" value="typed">'
        '<label>Patient ID <input name="patient_id" required autocomplete="off"></label>'
        '<label>Issuer <input name="issuer" autocomplete="off" '
        'placeholder="default of this box"></label>'
        '<label>Family name <input name="family" autocomplete="off"></label>'
        '<label>Given name <input name="given" autocomplete="off"></label>'
        '<label>Birth date <input name="birth_date" type="date"></label>'
        '<label>Sex <select name="sex"><option value="">unknown</option>'
        '<option value="F">female</option><option value="M">male</option>'
        '<option value="O">other</option></select></label>'
        '<button type="submit" class="primary">Start</button></form>'
        f'<h3>Unidentified</h3>{post}<input type="hidden" name="mode" value="unidentified">'
        "<p>Captures get a temporary patient ID until they are assigned.</p>"
        '<button type="submit" class="primary">Start unidentified</button></form></section>'
    )
    return layout("Start a patient", body, user, csrf)


def _expiry(h: HeldView) -> str:
    if not h.expires_at:
        return ""
    return f" · sent with a temporary patient ID from {h.expires_at} if not assigned"


def held_page(
    held: Sequence[HeldView],
    sessions: Sequence[SessionView],
    user: str,
    csrf: str,
    message: str = "",
) -> str:
    """Captures held for want of a patient (no patient data), to be assigned in one
    action to an open session, or to a patient started here."""
    note = f'<p class="notice" role="status">{_e(message)}</p>' if message else ""
    rows = "".join(
        f'<li><label class="check" data-id="{h.spool_id}">'
        f'<input type="checkbox" name="spool" value="{h.spool_id}">'
        f"<span><b>#{h.spool_id}</b> {_e(h.device)} · {_e(h.received_at)}"
        f"<br><small>{_e(h.reason)}{_e(_expiry(h))}</small></span></label></li>"
        for h in held
    )
    targets = "".join(
        f'<button type="submit" name="session" value="{s.id}" class="assign">'
        f"Assign to {_e(s.device)}: {_e(person(s.patient.patient_name))} "
        f"(ID {_e(s.patient.patient_id)})</button>"
        for s in sessions
        if s.closed_at is None
    )
    if not held:
        body = f'<section class="held"><h2>Held captures</h2>{note}<p>None waiting.</p></section>'
        return layout("Held captures", body, user, csrf)
    body = (
        f'<section class="held"><h2>Held captures</h2>{note}'
        "<p>These captures arrived while no patient was open on their device. Choose "
        "them, then who they belong to.</p>"
        f'<form method="post" action="/held/assign">{csrf_field(csrf)}'
        f'<ul class="checklist">{rows}</ul><div class="bottom">{targets}'
        '<button type="submit" formaction="/held/start" class="primary">'
        "Start a patient for them</button></div></form></section>"
    )
    return layout("Held captures", body, user, csrf)


def move_page(
    view: SessionView,
    captures: Sequence[SessionCapture],
    targets: Sequence[SessionView],
    user: str,
    csrf: str,
) -> str:
    """A session's unsent captures, to hand to another open session."""
    rows = "".join(
        f'<li><label class="check" data-id="{c.spool_id}">'
        f'<input type="checkbox" name="spool" value="{c.spool_id}" checked>'
        f"<span><b>#{c.spool_id}</b> {_e(c.device)} · {_e(c.received_at)} · {_e(c.state)}"
        f"{SENSITIVE_MARK if c.sensitive else ''}</span></label></li>"
        for c in captures
    )
    options = "".join(
        f'<option value="{t.id}">{_e(t.device)}: {_e(person(t.patient.patient_name))} '
        f"(ID {_e(t.patient.patient_id)})</option>"
        for t in targets
        if t.id != view.id and t.closed_at is None
    )
    if not captures or not options:
        why = (
            "No capture of this session is waiting to be sent."
            if not captures
            else ("No other patient is open: start the right patient on a device first.")
        )
        body = (
            f"<section><h2>Move captures</h2><p>{_e(why)}</p>"
            f'<a class="button" href="/sessions/{view.id}">Back to the patient</a></section>'
        )
        return layout("Move captures", body, user, csrf)
    body = (
        f'<section class="move"><h2>Move captures</h2>'
        f"<p>Captures of {_e(person(view.patient.patient_name))} (ID "
        f"{_e(view.patient.patient_id)}) on {_e(view.device)} not sent yet. Sent captures "
        "cannot be changed here: that is corrected in the PACS.</p>"
        f'<form method="post" action="/sessions/{view.id}/move">{csrf_field(csrf)}'
        f'<ul class="checklist">{rows}</ul>'
        f'<label>To <select name="to">{options}</select></label>'
        '<div class="bottom"><button type="submit" class="primary">Move…</button></div>'
        "</form></section>"
    )
    return layout("Move captures", body, user, csrf)


def move_confirm_page(
    view: SessionView, spool_ids: Sequence[int], target: SessionView, user: str, csrf: str
) -> str:
    """The confirmation step of a move (it is recorded in the audit log)."""
    hidden = "".join(f'<input type="hidden" name="spool" value="{i}">' for i in spool_ids)
    body = (
        '<section class="confirm"><h2>Please confirm</h2>'
        f"<p>Move {len(spool_ids)} capture(s) from</p>"
        f"{patient_block(view.patient, view.procedure, view.accession_number)}"
        f"<p>to</p>{patient_block(target.patient, target.procedure, target.accession_number)}"
        "<p>They will be wrapped again with the new patient. This is recorded in the audit "
        "log.</p>"
        f'<form method="post" action="/sessions/{view.id}/move">{csrf_field(csrf)}{hidden}'
        f'<input type="hidden" name="to" value="{target.id}">'
        '<input type="hidden" name="confirm" value="yes">'
        '<button type="submit" id="confirm" class="primary">Yes, move them</button>'
        f'<a class="button" href="/sessions/{view.id}">Cancel: back to the patient</a>'
        "</form></section>"
    )
    return layout("Confirm", body, user, csrf)
