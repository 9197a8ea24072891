"""Reading STOW-RS answers, QIDO-RS listings and Retry-After; planning requests.

The answers are in the shapes PS3.18 gives (DICOM JSON, the Native DICOM Model in
XML) and the ones stores were seen to send (a JSON list around the dataset, an
empty body, a 204).
"""

from __future__ import annotations

import time
from email.utils import formatdate
from pathlib import Path

from gateway.forward.cstore import StoreRequest
from gateway.forward.stow_answer import parse_qido_uids, parse_stow_answer, retry_after_seconds
from gateway.forward.stow_plan import StowItem, plan_requests

JSON_ANSWER = b"""{
  "00081190": {"vr": "UR", "Value": ["http://store/studies/1.2"]},
  "00081199": {"vr": "SQ", "Value": [
    {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.77.1.4"]},
     "00081155": {"vr": "UI", "Value": ["1.2.3.1"]}},
    {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.77.1.4"]},
     "00081155": {"vr": "UI", "Value": ["1.2.3.2"]},
     "00081196": {"vr": "US", "Value": [45063]}}]},
  "00081198": {"vr": "SQ", "Value": [
    {"00081155": {"vr": "UI", "Value": ["1.2.3.3"]},
     "00081197": {"vr": "US", "Value": [45070]}},
    {"00081155": {"vr": "UI", "Value": ["1.2.3.4"]}}]}
}"""

XML_ANSWER = b"""<?xml version="1.0" encoding="UTF-8"?>
<NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM">
  <DicomAttribute tag="00081199" vr="SQ" keyword="ReferencedSOPSequence">
    <Item number="1">
      <DicomAttribute tag="00081155" vr="UI"><Value number="1">1.2.3.1</Value></DicomAttribute>
    </Item>
  </DicomAttribute>
  <DicomAttribute tag="00081198" vr="SQ" keyword="FailedSOPSequence">
    <Item number="1">
      <DicomAttribute tag="00081155" vr="UI"><Value number="1">1.2.3.9</Value></DicomAttribute>
      <DicomAttribute tag="00081197" vr="US"><Value number="1">49152</Value></DicomAttribute>
    </Item>
  </DicomAttribute>
</NativeDicomModel>"""


def test_json_answer_gives_each_instance_its_result() -> None:
    answer = parse_stow_answer(JSON_ANSWER, "application/dicom+json")
    assert answer.stored == {"1.2.3.1": None, "1.2.3.2": 45063}
    assert answer.failed == {"1.2.3.3": 45070, "1.2.3.4": None}
    wrapped = parse_stow_answer(b"[" + JSON_ANSWER + b"]", "application/json")
    assert wrapped == answer


def test_xml_answer_is_read_and_a_dtd_is_refused() -> None:
    answer = parse_stow_answer(XML_ANSWER, "application/dicom+xml; charset=utf-8")
    assert answer.stored == {"1.2.3.1": None}
    assert answer.failed == {"1.2.3.9": 0xC000}
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>'
    assert parse_stow_answer(bomb, "application/dicom+xml").stored == {}


def test_unreadable_answers_list_nothing() -> None:
    for body, kind in [
        (b"", "application/dicom+json"),
        (b"<html>proxy error</html>", "text/html"),
        (b"not json", "application/dicom+json"),
        (b'{"00081199": {"vr": "SQ", "Value": "oops"}}', "application/dicom+json"),
    ]:
        answer = parse_stow_answer(body, kind)
        assert answer.stored == {}, body
        assert answer.failed == {}, body


def test_qido_listing_and_no_content() -> None:
    body = b'[{"00080018": {"vr": "UI", "Value": ["1.2.3.1"]}}, {"0020000D": {}}]'
    assert parse_qido_uids(body) == ["1.2.3.1"]
    assert parse_qido_uids(b"") == []


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert retry_after_seconds("120") == 120.0
    now = time.time()
    assert 55 <= (retry_after_seconds(formatdate(now + 60, usegmt=True), now) or 0) <= 61
    assert retry_after_seconds(formatdate(now - 60, usegmt=True), now) == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def item(spool_id: int, study: str, size: int) -> StowItem:
    request = StoreRequest(spool_id, Path(f"{spool_id}.dcm"), "1.2", "1.2.840.10008.1.2.1")
    return StowItem(request, study, f"1.9.{spool_id}", size)


def test_requests_are_per_study_small_ones_together_large_ones_alone() -> None:
    items = [
        item(1, "A", 40),
        item(2, "B", 10),
        item(3, "A", 40),
        item(4, "A", 150),  # larger than the limit: alone
        item(5, "A", 30),  # 40 + 40 + 30 > 100: a new request
        item(6, "B", 10),
    ]
    planned = [[i.request.spool_id for i in chunk] for chunk in plan_requests(items, 100)]
    assert planned == [[4], [1, 3], [5], [2, 6]]  # a large one goes as soon as it is met
