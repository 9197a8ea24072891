"""Server-rendered HTML of the local page. Everything interpolated is escaped.

No patient data is rendered here except by :func:`capture_page` with ``patient``
given (an audited reveal). Forms that change anything carry the CSRF token.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any

from gateway.spool.admin import RESOLUTIONS
from gateway.status.checks.result import CheckResult
from gateway.status.web.audit import REVEAL_REASONS
from gateway.status.web.data import (
    DestinationFigures,
    Figures,
    SpoolRow,
    Verdict,
    human_age,
    human_bytes,
)
from gateway.status.web.header import BOX_LINE

MASK = "\u2022" * 8


def _e(value: object) -> str:
    return escape("" if value is None else str(value))


def layout(title: str, body: str, user: str | None = None, csrf: str | None = None) -> str:
    """The page frame: header with the box line (box id, version, when the page was
    made: :mod:`.header`), navigation and logout when logged in."""
    nav = ""
    if user is not None and csrf is not None:
        nav = (
            '<nav aria-label="Pages"><a href="/">Overview</a> '
            '<a href="/why">Why isn\'t it sending?</a> '
            '<a href="/spool">Spool: all captures</a> <a href="/held">Held captures</a> '
            f'<form method="post" action="/logout" class="inline">{csrf_field(csrf)}'
            f'<button type="submit">Log out {_e(user)}</button></form></nav>'
        )
    line = BOX_LINE.get()
    box = "" if line is None else line.html(logged_in=user is not None)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{_e(title)} - DermGate</title><link rel="stylesheet" href="/static/style.css">'
        f'</head><body><header><div class="brand"><h1>DermGate</h1>{box}</div>'
        f"{nav}</header><main>{body}</main>"
        '<script src="/static/live.js" defer></script></body></html>'
    )


def csrf_field(token: str) -> str:
    """The hidden CSRF field of a form."""
    return f'<input type="hidden" name="csrf" value="{_e(token)}">'


def login_page(token: str, message: str = "") -> str:
    """The only page without a session."""
    note = f'<p class="error" role="alert">{_e(message)}</p>' if message else ""
    body = (
        f'<section class="login"><h2>Log in</h2>{note}'
        f'<form method="post" action="/login">{csrf_field(token)}'
        '<label>User <input name="user" autocomplete="username" required autofocus></label>'
        '<label>Password <input name="password" type="password" '
        'autocomplete="current-password" required></label>'
        '<button type="submit">Log in</button></form></section>'
    )
    return layout("Log in", body)


def _worklist_card(fig: Figures) -> str:
    """The worklist's size and age (counts only), when there is a ``[worklist]``."""
    w = fig.worklist
    if not w.get("configured"):
        return ""
    age = w.get("age_s")
    when = "never refreshed" if age is None else f"{human_age(float(age))} old"
    return (
        f'<div class="card{" bad" if w.get("stale") else ""}" id="worklist">'
        f"<b>{int(w.get('items') or 0)}</b>worklist items, {_e(when)}"
        f"{' (stale)' if w.get('stale') else ''}</div>"
    )


def _local_hm(iso: str | None) -> str:
    """``19:00`` (box's local time) from an ISO instant; ``?`` when unreadable."""
    try:
        return datetime.fromisoformat(iso or "").astimezone().strftime("%H:%M")
    except ValueError:
        return "?"


def _destination_state(d: DestinationFigures, csrf: str | None) -> str:
    """A destination's state cell: failing, OK, or waiting for its send window (with
    the "Send now" button: POST, CSRF, logged-in user, audited)."""
    if d.failing:
        return '<td data-label="State" class="state fail">failing</td>'
    if d.waiting_for_window:
        button = ""
        if csrf is not None:
            button = (
                f'<form method="post" action="/destinations/{_e(d.name)}/send-now" '
                f'class="inline send-now">{csrf_field(csrf)}'
                '<button type="submit">Send now</button></form>'
            )
        return (
            '<td data-label="State" class="state waiting" data-window="waiting">'
            f"waiting for the send window (opens {_e(_local_hm(d.next_window))}){button}</td>"
        )
    if d.send_now:
        return (
            '<td data-label="State" class="state ok" data-window="send-now">'
            "sending now (outside its window)</td>"
        )
    return '<td data-label="State" class="state ok">OK</td>'


def overview_fragment(fig: Figures, verdict: Verdict, csrf: str | None = None) -> str:
    """The live part of the overview (replaced on every server-sent update)."""
    reasons = "".join(f"<li>{_e(r)}</li>" for r in verdict.reasons)
    head = (
        f'<section class="verdict {verdict.colour}" data-verdict="{verdict.colour}" '
        'id="verdict" role="status" aria-live="polite" aria-atomic="true">'
        f"<h2>{_e(verdict.headline)}</h2><ul>{reasons}</ul></section>"
    )
    oldest = human_age(fig.oldest_waiting_age) if fig.oldest_waiting_age is not None else "none"
    lag = human_age(fig.commitment_lag) if fig.commitment_lag is not None else "none"
    numbers = (
        '<section class="cards">'
        f'<div class="card"><b id="delivered">{fig.delivered}</b>delivered</div>'
        f'<div class="card"><b id="backlog">{fig.backlog}</b>waiting to be sent</div>'
        f'<div class="card"><b>{_e(oldest)}</b>oldest waiting capture</div>'
        f'<div class="card"><b>{fig.quarantined_open}</b>set aside</div>'
        f'<div class="card"><b>{_e(lag)}</b>oldest unconfirmed by the PACS</div>'
        f'<div class="card{" bad" if fig.disk.low else ""}"><b>{human_bytes(fig.disk.free)}</b>'
        f"free disk (reserve {human_bytes(fig.disk.reserve)})</div>{_worklist_card(fig)}"
        "</section>"
    )
    devices = "".join(
        f'<tr><td data-label="Device">{_e(d.get("name"))}</td>'
        f'<td data-label="Driver">{_e(d.get("driver"))}</td>'
        f'<td data-label="State" class="state {_e(str(d.get("state")).lower())}">'
        f'{_e(d.get("state"))}</td><td data-label="Detail">{_e(d.get("detail"))}</td>'
        f'<td data-label="Restarts">{_e(d.get("restarts"))}</td></tr>'
        for d in fig.devices
    )
    dests = "".join(
        f'<tr data-destination="{_e(d.name)}"><td data-label="Name">{_e(d.name)}</td>'
        f'<td data-label="Address">{_e(d.host)}:{d.port}</td>'
        f'{_destination_state(d, csrf)}<td data-label="Waiting">{d.pending}</td>'
        f'<td data-label="Reason">{_e(d.last_error) if d.failing else ""}</td></tr>'
        if not d.removed
        else f'<tr><td data-label="Name">{_e(d.name)}</td><td data-label="Address">-</td>'
        '<td data-label="State" class="state fail">destination removed</td>'
        f'<td data-label="Waiting">{d.pending + d.sent}</td>'
        '<td data-label="Reason">no longer configured: captures wait for it</td></tr>'
        for d in fig.destinations
    )
    alarms = "".join(
        f"<li>{_e(a.get('code'))}: {_e(a.get('message') or a.get('subject'))}</li>"
        for a in fig.alarms
    )
    return (
        head
        + numbers
        + '<section><h3>Devices</h3><table class="list"><tr class="head"><th>Device</th>'
        + "<th>Driver</th><th>State</th><th>Detail</th><th>Restarts</th></tr>"
        + f"{devices}</table></section>"
        + '<section><h3>Destinations</h3><table class="list"><tr class="head"><th>Name</th>'
        + "<th>Address</th><th>State</th><th>Waiting</th><th>Reason</th></tr>"
        + f"{dests}</table></section>"
        + f"<section><h3>Alarms</h3><ul>{alarms or '<li>none</li>'}</ul></section>"
    )


def overview_page(fragment: str, user: str, csrf: str) -> str:
    """The overview, with live updates from ``/events``."""
    body = f'<div id="overview" data-live="/events">{fragment}</div>'
    return layout("Overview", body, user, csrf)


def why_page(results: list[CheckResult], user: str, csrf: str) -> str:
    """The results of the checks, with advice."""
    rows = "".join(
        f'<tr class="{r.status}"><td data-label="Check">{_e(r.name)}</td>'
        f'<td data-label="Result" class="state {r.status}">{_e(r.status.upper())}</td>'
        f'<td data-label="Finding">{_e(r.finding)}</td>'
        f'<td data-label="What to do">{_e(r.advice)}</td></tr>'
        for r in results
    )
    failed = [r for r in results if r.status == "fail"]
    warned = [r for r in results if r.status in ("warn", "unknown")]
    if failed:
        summary = f"{len(failed)} problem(s) found: fix the first one first."
    elif warned:
        summary = f"Nothing blocks sending; {len(warned)} thing(s) to look at."
    else:
        summary = "No problem found by the checks."
    body = (
        f'<section id="why"><h2>Why isn\'t it sending?</h2><p class="summary">{_e(summary)}</p>'
        '<table class="list"><tr class="head"><th>Check</th><th>Result</th><th>Finding</th>'
        f"<th>What to do</th></tr>{rows}</table>"
        '<p><a class="button" href="/why">Run the checks again</a></p></section>'
    )
    return layout("Why isn't it sending?", body, user, csrf)


def spool_page(rows: list[SpoolRow], state: str | None, user: str, csrf: str) -> str:
    """Captures with state, age, device, reason; links to the actions."""
    states = ["", "HELD", "CAPTURED", "WRAPPED", "SENT", "COMMITTED", "PURGED", "QUARANTINED"]
    options = "".join(
        f'<option value="{s}"{" selected" if (state or "") == s else ""}>{s or "all"}</option>'
        for s in states
    )
    lines = []
    for r in rows:
        actions = f'<a href="/spool/{r.spool_id}">Open capture {r.spool_id}</a>'
        if r.state == "QUARANTINED":
            actions += f' <a href="/spool/{r.spool_id}/retry">Retry capture {r.spool_id}</a>'
            if not (r.reason or "").startswith("resolved by technician"):
                actions += (
                    f' <a href="/spool/{r.spool_id}/resolve">Resolve capture {r.spool_id}</a>'
                )
        mark = ' <span class="sensitive" title="sensitive">Sensitive</span>' if r.sensitive else ""
        reason = r.reason or r.last_error or ""
        if r.removed:  # waits for a destination taken out of the configuration
            gone = f"destination removed: {', '.join(r.removed)}"
            reason = f"{gone}; {reason}" if reason else gone
        lines.append(
            f'<tr data-id="{r.spool_id}"><td data-label="Id">{r.spool_id}{mark}</td>'
            f'<td data-label="State" class="state {r.state.lower()}">{_e(r.state)}</td>'
            f'<td data-label="Age">{_e(human_age(r.age))}</td>'
            f'<td data-label="Device">{_e(r.device)}</td>'
            f'<td data-label="Reason">{_e(reason)}</td><td class="actions">{actions}</td></tr>'
        )
    body = (
        '<section><h2>Spool</h2><form method="get" action="/spool">'
        f'<label>State <select name="state">{options}</select></label> '
        '<button type="submit">Show</button></form>'
        '<table class="list"><tr class="head"><th>Id</th><th>State</th><th>Age</th>'
        "<th>Device</th><th>Reason</th><th>Actions</th></tr>"
        f"{''.join(lines) or '<tr><td colspan=6>empty</td></tr>'}</table></section>"
    )
    return layout("Spool", body, user, csrf)


def capture_page(
    details: dict[str, Any],
    patient: dict[str, str] | None,
    user: str,
    csrf: str,
    message: str = "",
    sensitive: bool = False,
) -> str:
    """One capture; patient data masked unless ``patient`` is given (audited reveal).
    A ``sensitive`` capture is marked, and its reveal asks for a reason category."""
    from gateway.spool.details import PATIENT_ATTRIBUTES

    spool_id = details["id"]
    note = f'<p class="notice" role="status">{_e(message)}</p>' if message else ""
    fields = [
        ("State", details["state"]),
        ("Reason", details["reason"]),
        ("Device", f"{details['device']['manufacturer']} {details['device']['model']}"),
        ("Device class", details["device"]["device_class"]),
        ("SOP Instance UID", details["sop_instance_uid"]),
        ("Received", details["received_at"]),
    ]
    for d in details["deliveries"]:
        shown = f"{d['state']} ({d['attempts']} attempts)"
        if d["sent_as"]["derived"]:
            shown += f", as {d['sent_as']['text']}"
        if d.get("note"):
            shown += f", {d['note']}"  # waits for a destination no longer configured
        fields.append((f"To {d['destination']}", shown))
    table = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in fields)
    step = details.get("next_step")
    if step:
        table += f'<tr id="next-step"><th>What to do</th><td>{_e(step)}</td></tr>'
    if patient is None:
        pat = "".join(
            f'<tr><th>{_e(label)}</th><td class="masked">{MASK}</td></tr>'
            for _, label in PATIENT_ATTRIBUTES
        )
        reasons = ""
        if sensitive:
            reasons = (
                '<fieldset class="reasons"><legend>Why do you need to see it?</legend>'
                + "".join(
                    f'<label class="radio"><input type="radio" name="reason" value="{k}" required>'
                    f" {_e(v)}</label>"
                    for k, v in REVEAL_REASONS.items()
                )
                + "</fieldset>"
            )
        reveal = (
            f'<form method="post" action="/spool/{spool_id}/reveal">{csrf_field(csrf)}{reasons}'
            '<button type="submit" id="reveal">Reveal patient data (recorded in the audit log)'
            "</button></form>"
        )
    else:
        pat = "".join(
            f'<tr><th>{_e(label)}</th><td class="revealed">{_e(patient.get(k) or "(empty)")}'
            "</td></tr>"
            for k, label in PATIENT_ATTRIBUTES
        )
        reveal = '<p class="notice">Shown once; this reveal was recorded in the audit log.</p>'
    actions = ""
    if details["state"] == "QUARANTINED":
        actions = _set_aside_actions(details, csrf)
    flag = "0" if sensitive else "1"
    marker = (
        '<p><span class="sensitive" id="sensitive-mark">Sensitive</span></p>' if sensitive else ""
    )
    actions += (
        f'<form method="post" action="/spool/{spool_id}/sensitive">{csrf_field(csrf)}'
        f'<input type="hidden" name="sensitive" value="{flag}"><button type="submit" '
        f'id="flag">{"Not sensitive" if sensitive else "Mark as sensitive"}</button></form>'
    )
    body = (
        f"<section><h2>Capture {spool_id}</h2>{note}{marker}<table>{table}</table>{actions}"
        "</section>"
        f'<section><h3>Patient</h3><table id="patient">{pat}</table>{reveal}</section>'
    )
    return layout(f"Capture {spool_id}", body, user, csrf)


def _set_aside_actions(details: dict[str, Any], csrf: str) -> str:
    """Retry, Resolve and Download (POST, CSRF, audited) of a capture set aside."""
    spool_id = details["id"]
    actions = (
        f'<p class="actions"><a class="button" href="/spool/{spool_id}/retry">'
        f"Retry capture {spool_id}</a>"
    )
    if not (details["reason"] or "").startswith("resolved by technician"):
        actions += (
            f' <a class="button" href="/spool/{spool_id}/resolve">Resolve capture {spool_id}</a>'
        )
    actions += "</p>"
    files = details.get("files") or {}
    kind = next((k for k in ("dicom", "raw") if (files.get(k) or {}).get("exists")), None)
    if kind is not None:
        what = "DICOM file" if kind == "dicom" else "device's original file"
        actions += (
            f'<form method="post" action="/spool/{spool_id}/download" class="download">'
            f'{csrf_field(csrf)}<button type="submit" id="download">Download its {what} '
            "(recorded in the audit log)</button></form>"
        )
    return actions


def confirm_page(spool_id: int, action: str, reason: str | None, user: str, csrf: str) -> str:
    """The confirmation step of retry and resolve."""
    if action == "retry":
        question = (
            f"Retry capture {spool_id}? It will be wrapped or sent again. Do this once the cause "
            "shown below is fixed."
        )
        extra = ""
    else:
        question = (
            f"Mark capture {spool_id} as resolved? It stays on disk (a retry is still possible) "
            "but no longer counts as needing attention."
        )
        extra = (
            '<fieldset class="reasons"><legend>How was it dealt with?</legend>'
            + "".join(
                f'<label class="radio"><input type="radio" name="resolution" value="{_e(k)}"'
                f"{' checked' if i == 0 else ''}> {_e(v)}</label>"
                for i, (k, v) in enumerate(RESOLUTIONS.items())
            )
            + "</fieldset>"
        )
    body = (
        f'<section class="confirm"><h2>Please confirm</h2><p>{_e(question)}</p>'
        f"<p>Reason it was set aside: {_e(reason or '-')}</p>"
        f'<form method="post" action="/spool/{spool_id}/{action}">{csrf_field(csrf)}{extra}'
        f'<button type="submit" id="confirm">Yes, {_e(action)}</button> '
        f'<a class="button" href="/spool/{spool_id}">Cancel: back to capture {spool_id}</a>'
        "</form></section>"
    )
    return layout("Confirm", body, user, csrf)


def message_page(title: str, text: str, user: str | None = None, csrf: str | None = None) -> str:
    """A plain message (errors, refusals)."""
    return layout(title, f"<section><h2>{_e(title)}</h2><p>{_e(text)}</p></section>", user, csrf)
