"""The integration API's request bodies become the context desk's requests, or a
typed 4xx refusal whose message never quotes what was sent."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.context.desk import (
    ContextError,
    ContextErrorCode,
    LesionRequest,
    PickItem,
    TypedPatient,
    Unidentified,
)
from gateway.core.capture import Laterality, PatientContext
from gateway.status.web.api_requests import (
    ApiError,
    assign_request,
    from_context_error,
    lesion_request,
    parse_body,
    path_id,
    search_text,
    session_request,
)

PATIENT = {"id": "PID-4711", "issuer": "HOSP", "name": "Müller^Anna", "birth_date": "19700131",
           "sex": "F"}  # fmt: skip


def test_the_contract_shapes_become_desk_requests() -> None:
    by_acc = session_request({"device": "dermatoscope", "accession_number": "ACC1"})
    assert by_acc.device == "dermatoscope"
    assert by_acc.request == PickItem(accession_number="ACC1")
    assert by_acc.operator == ""
    by_sps = session_request({"device": "confocal", "scheduled_procedure_step_id": "SPS9"})
    assert by_sps.request == PickItem(sps_id="SPS9")
    by_key = session_request({"device": "d", "worklist_item": "1.2.3|SPS9"})
    assert by_key.request == PickItem(item_key="1.2.3|SPS9")
    typed = session_request({"device": "d", "patient": PATIENT, "operator": "Smith^Jo"})
    assert typed.request == TypedPatient(
        PatientContext(patient_name="Müller^Anna", patient_id="PID-4711",
                       issuer_of_patient_id="HOSP", birth_date="19700131", sex="F")
    )  # fmt: skip
    assert typed.operator == "Smith^Jo"
    assert session_request({"device": "d", "unidentified": True}).request == Unidentified()
    minimal = session_request({"device": "d", "patient": {"id": "P1"}})
    assert minimal.request == TypedPatient(PatientContext(patient_id="P1"))


def test_lesions_by_tracking_id_or_by_site() -> None:
    assert lesion_request({"tracking_id": "L03"}) == LesionRequest(tracking_id="L03")
    assert lesion_request(
        {"site": "SCT:66643007", "laterality": "L", "description": "mole left arm"}
    ) == LesionRequest(site="SCT:66643007", laterality=Laterality.LEFT,
                       description="mole left arm")  # fmt: skip
    assert lesion_request({"site": "66643007"}).site == "66643007"


def test_assignments_to_a_session_or_to_a_new_one() -> None:
    to_session = assign_request({"spool_ids": [4, 5], "session": 7})
    assert (to_session.spool_ids, to_session.session_id, to_session.new) == ([4, 5], 7, None)
    to_new = assign_request({"spool_ids": [4], "device": "d", "accession_number": "A1"})
    assert to_new.session_id is None
    assert to_new.new is not None
    assert to_new.new.request == PickItem(accession_number="A1")


def _refused(fn: Any, *args: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        fn(*args)
    return caught.value


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"", 400), (b"   ", 400), (b"not json", 400), (b"[1, 2]", 400), (b'"text"', 400),
     (b"null", 400), (b'{"a": NaN}', 400), (b"\xff\xfe\xfd", 400), (b"[" * 100_000, 400),
     (b'{"n": ' + b"9" * 5000 + b"}", 400)],
)  # fmt: skip
def test_bodies_that_are_not_a_json_object_are_400(body: bytes, status: int) -> None:
    err = _refused(parse_body, body)
    assert (err.status, err.code) == (status, "bad_json")


@pytest.mark.parametrize(
    ("obj", "code"),
    [
        ({}, "bad_request"),
        ({"device": "d"}, "bad_request"),
        ({"device": 5, "unidentified": True}, "bad_request"),
        ({"device": "d", "unidentified": False}, "bad_request"),
        ({"device": "d", "unidentified": True, "accession_number": "A"}, "bad_request"),
        ({"device": "d", "accession_number": ""}, "bad_request"),
        ({"device": "d", "accession_number": ["A"]}, "bad_request"),
        ({"device": "d", "accession_number": "A" * 17}, "bad_request"),
        ({"device": "d", "unidentified": True, "Doe^Janet": 1}, "bad_request"),
        ({"device": "../etc", "unidentified": True}, "unknown_device"),
        ({"device": "d", "patient": "PID-1"}, "bad_patient"),
        ({"device": "d", "patient": {"name": "Doe^Janet"}}, "bad_patient"),
        ({"device": "d", "patient": {**PATIENT, "birth_date": "19700231"}}, "bad_patient"),
        ({"device": "d", "patient": {**PATIENT, "birth_date": "31.01.1970"}}, "bad_patient"),
        ({"device": "d", "patient": {**PATIENT, "sex": "X"}}, "bad_patient"),
        ({"device": "d", "patient": {**PATIENT, "id": "A\\B"}}, "bad_patient"),
        ({"device": "d", "patient": {**PATIENT, "name": "a^b^c^d^e^f"}}, "bad_patient"),
        ({"device": "d", "patient": {**PATIENT, "extra": 1}}, "bad_request"),
        ({"device": "d", "unidentified": True, "operator": 7}, "bad_request"),
    ],
)
def test_bad_session_requests_are_422_without_the_values(obj: dict[str, Any], code: str) -> None:
    err = _refused(session_request, obj)
    assert (err.status, err.code) == (422, code)
    for secret in ("Doe", "Janet", "PID-", "1970", "etc"):
        assert secret not in err.message


@pytest.mark.parametrize(
    ("obj", "code"),
    [
        ({}, "bad_lesion"),
        ({"tracking_id": "L03", "site": "SCT:1"}, "bad_lesion"),
        ({"tracking_id": "L03", "laterality": "L"}, "bad_lesion"),
        ({"site": "SCT:66643007", "laterality": "left"}, "bad_lesion"),
        ({"site": 66643007}, "bad_lesion"),
        ({"site": "not a code!"}, "unknown_site"),
        ({"site": "SCT:1", "colour": "red"}, "bad_request"),
    ],
)
def test_bad_lesion_requests_are_422(obj: dict[str, Any], code: str) -> None:
    err = _refused(lesion_request, obj)
    assert (err.status, err.code) == (422, code)


@pytest.mark.parametrize(
    "obj",
    [
        {"session": 1},
        {"spool_ids": [], "session": 1},
        {"spool_ids": "1", "session": 1},
        {"spool_ids": [True], "session": 1},
        {"spool_ids": [0], "session": 1},
        {"spool_ids": [2**63], "session": 1},
        {"spool_ids": [1.5], "session": 1},
        {"spool_ids": [1, 1], "session": 1},
        {"spool_ids": list(range(1, 1002)), "session": 1},
        {"spool_ids": [1]},
        {"spool_ids": [1], "session": "7"},
        {"spool_ids": [1], "session": 1, "device": "d"},
    ],
)
def test_bad_assignments_are_422(obj: dict[str, Any]) -> None:
    err = _refused(assign_request, obj)
    assert err.status == 422


def test_search_ids_and_context_errors() -> None:
    assert search_text(None) == ""
    assert search_text("  müller ") == "müller"
    assert _refused(search_text, "x" * 65).status == 422
    assert _refused(search_text, "a\x00b").status == 422
    assert path_id("42", "no_such_session") == 42
    assert _refused(path_id, "0", "no_such_session").status == 404
    assert _refused(path_id, "9" * 19, "no_such_session").code == "no_such_session"
    expected = {
        ContextErrorCode.NO_SUCH_SESSION: 404, ContextErrorCode.NO_SUCH_ITEM: 404,
        ContextErrorCode.SESSION_CLOSED: 409, ContextErrorCode.ALREADY_SENT: 409,
        ContextErrorCode.AMBIGUOUS_ITEM: 409, ContextErrorCode.NOT_HELD: 409,
        ContextErrorCode.BAD_PATIENT: 422, ContextErrorCode.BAD_LESION: 422,
        ContextErrorCode.UNKNOWN_SITE: 422, ContextErrorCode.BAD_REQUEST: 422,
        ContextErrorCode.UNKNOWN_DEVICE: 422, ContextErrorCode.NO_WORKLIST: 503,
        ContextErrorCode.WORKLIST_UNAVAILABLE: 503,
    }  # fmt: skip
    assert set(expected) == set(ContextErrorCode)
    for code, status in expected.items():
        err = from_context_error(ContextError(code, "plain words"))
        assert err.body() == {"error": {"code": str(code), "message": "plain words"}}
        assert err.status == status


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=12,
)  # fmt: skip
_keys = st.sampled_from(["device", "operator", "accession_number", "scheduled_procedure_step_id",
                         "worklist_item", "patient", "unidentified", "spool_ids", "session",
                         "tracking_id", "site", "laterality", "description", "x"])  # fmt: skip


def _refusal(parse: Any, value: Any) -> ApiError | None:
    try:
        parse(value)
    except ApiError as err:
        return err
    return None


@given(st.binary(max_size=200))
def test_fuzz_any_bytes_are_an_object_or_a_400(body: bytes) -> None:
    err = _refusal(parse_body, body)
    assert err is None or err.status == 400


@given(st.dictionaries(_keys, _json_values, max_size=5))
def test_fuzz_any_object_is_a_request_or_a_4xx_that_quotes_no_value(obj: dict[str, Any]) -> None:
    for parse in (session_request, lesion_request, assign_request):
        err = _refusal(parse, obj)
        if err is None:
            continue
        assert 400 <= err.status < 500
        for value in _strings(obj):
            if len(value) >= 6 and value not in ("device", "patient", "session"):
                assert value not in err.message, (json.dumps(obj), err.message)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []
