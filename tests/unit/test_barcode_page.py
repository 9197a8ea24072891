"""The page shows a barcode scan that opened nothing on its device's card."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.context.barcode.stage import ScanNotice, ScanOutcome
from gateway.context.desk import ContextErrorCode, SessionView
from gateway.core.capture import PatientContext
from gateway.core.context import SessionSource
from gateway.status.web.context_pages import SCAN_SHOWN, sessions_fragment, unused_scan

NOW = datetime(2026, 12, 6, 10, 0, 0, tzinfo=UTC)


def notice(
    outcome: ScanOutcome, text: str, *, ago: float = 5, device: str = "scope", **kw: object
) -> ScanNotice:
    at = (NOW - timedelta(seconds=ago)).isoformat(timespec="milliseconds")
    return ScanNotice(at=at, scanner="barcodes[0]", device=device, outcome=outcome, text=text, **kw)  # type: ignore[arg-type]


def session(opened_ago: float) -> SessionView:
    return SessionView(
        id=7, device="scope", source=SessionSource.BARCODE,
        patient=PatientContext(patient_name="Nakamura^Hana", patient_id="MRN-3001"),
        study_uid="1.2.3", accession_number="", procedure="", opened_by="barcode:barcodes[0]",
        opened_at=(NOW - timedelta(seconds=opened_ago)).isoformat(timespec="milliseconds"),
        operator_name="", closed_at=None, lesion=None, sensitive=False, captures=0,
    )  # fmt: skip


def test_an_unused_scan_is_shown_on_its_device_card_escaped() -> None:
    scans = [
        notice(ScanOutcome.NO_MATCH, "<script>x</script>"),
        notice(ScanOutcome.TYPED, "P1", device="cam"),
    ]
    html = sessions_fragment(
        ["scope", "cam", "other"], [], 0, "tok", now=NOW.timestamp(), scans=scans
    )
    scope, cam, other = html.split('class="device-session"')[1:]
    assert "Scan not used (it does not fit this scanner&#x27;s pattern)" in scope
    assert "&lt;script&gt;x&lt;/script&gt;" in scope
    assert "<script>" not in html
    assert "typed, not scanned" in cam
    assert "<b>P1</b>" in cam
    assert "Scan not used" not in other


def test_only_the_newest_scan_counts_and_a_match_shows_nothing() -> None:
    scans = [
        notice(ScanOutcome.MATCHED, "ACC-1", session_id=7),
        notice(ScanOutcome.NO_MATCH, "X", ago=9),
    ]
    assert unused_scan("scope", session(opened_ago=4), scans, NOW.timestamp()) == ""


def test_a_refusal_says_why_in_the_desks_words() -> None:
    scans = [notice(ScanOutcome.REFUSED, "ACC-9", error=ContextErrorCode.NO_SUCH_ITEM,
                    message="no worklist item has that accession number")]  # fmt: skip
    html = unused_scan("scope", None, scans, NOW.timestamp())
    assert "Scan not used (no worklist item has that accession number): <b>ACC-9</b>" in html
    assert 'data-outcome="refused"' in html


def test_an_old_scan_or_one_before_the_open_session_is_not_shown() -> None:
    old = [notice(ScanOutcome.NO_MATCH, "X", ago=SCAN_SHOWN + 1)]
    assert unused_scan("scope", None, old, NOW.timestamp()) == ""
    before = [notice(ScanOutcome.NO_MATCH, "X", ago=30)]
    assert unused_scan("scope", session(opened_ago=20), before, NOW.timestamp()) == ""
    assert "Scan not used" in unused_scan("scope", session(opened_ago=40), before, NOW.timestamp())
