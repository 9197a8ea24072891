"""The integration API's requests and answers as plain data (no HTTP here).

Request bodies (JSON bytes) become :mod:`gateway.context.desk` requests, or an
:class:`ApiError` with an HTTP status, a code and a plain message; views become
JSON-ready dicts. Every check is strict: unknown keys, wrong types, out-of-range
numbers and malformed values are refused, and no message ever quotes a value
(it names the key), so patient data sent by mistake is never echoed back or logged.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.context.desk import (
    ContextError,
    ContextErrorCode,
    HeldView,
    LesionRequest,
    LesionView,
    PickItem,
    SessionRequest,
    SessionView,
    TypedPatient,
    Unidentified,
)
from gateway.core.capture import Laterality, PatientContext
from gateway.core.context import Coded, WorklistEntry, WorklistStatus

#: The largest spool id and session id (SQLite's largest INTEGER).
MAX_ID = 2**63 - 1
#: At most this many spool ids in one assignment.
MAX_SPOOL_IDS = 1000
#: The longest worklist search text.
MAX_SEARCH = 64

#: HTTP status of each refusal of the context stage.
STATUS_OF: dict[ContextErrorCode, int] = {
    ContextErrorCode.UNKNOWN_DEVICE: 422,
    ContextErrorCode.NO_SUCH_SESSION: 404,
    ContextErrorCode.NO_SUCH_ITEM: 404,
    ContextErrorCode.SESSION_CLOSED: 409,
    ContextErrorCode.ALREADY_SENT: 409,
    ContextErrorCode.AMBIGUOUS_ITEM: 409,
    ContextErrorCode.NOT_HELD: 409,
    ContextErrorCode.BAD_PATIENT: 422,
    ContextErrorCode.BAD_LESION: 422,
    ContextErrorCode.UNKNOWN_SITE: 422,
    ContextErrorCode.BAD_REQUEST: 422,
    ContextErrorCode.NO_WORKLIST: 503,
    ContextErrorCode.WORKLIST_UNAVAILABLE: 503,
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")
_DATE = re.compile(r"^\d{8}$")


class ApiError(Exception):
    """A refused API request: HTTP ``status``, ``code`` and a plain ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        """The JSON answer: ``{"error": {"code": ..., "message": ...}}``."""
        return {"error": {"code": self.code, "message": self.message}}


def bad_request(message: str, code: str = "bad_request", status: int = 422) -> ApiError:
    """A refusal of the request's shape (422 unless said otherwise)."""
    return ApiError(status, code, message)


def from_context_error(err: ContextError) -> ApiError:
    """The API's answer to a refusal of the context stage."""
    return ApiError(STATUS_OF.get(err.code, 422), str(err.code), err.message)


# --------------------------------------------------------------------------- JSON body


def _no_constants(name: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


def parse_body(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object, or a 400 ``bad_json``."""
    if not body.strip():
        raise bad_request("the request needs a JSON object as its body", "bad_json", 400)
    try:
        value = json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError, UnicodeDecodeError):
        # ValueError covers JSONDecodeError and integers past Python's digit limit.
        raise bad_request("the body is not valid JSON (UTF-8)", "bad_json", 400) from None
    if not isinstance(value, dict):
        raise bad_request("the body must be a JSON object", "bad_json", 400)
    return value


def _only(obj: dict[str, Any], allowed: set[str], where: str = "the request") -> None:
    unknown = set(obj) - allowed
    if unknown:
        # Name a key only when it looks like one (a key could be data sent by mistake).
        named = sorted(k for k in unknown if re.fullmatch(r"[A-Za-z_]{1,32}", k))[:5]
        keys = ", ".join(f"'{k}'" for k in named) if named else f"{len(unknown)} key(s)"
        raise bad_request(f"unknown key(s) in {where}: {keys}")


def _text(
    obj: dict[str, Any],
    key: str,
    limit: int,
    *,
    required: bool = False,
    code: str = "bad_request",
) -> str:
    """``obj[key]`` as a checked string ("" when absent and not required)."""
    value = obj.get(key)
    if value is None:
        if required:
            raise bad_request(f"'{key}' is required", code)
        return ""
    if not isinstance(value, str):
        raise bad_request(f"'{key}' must be a string", code)
    value = value.strip()
    if required and not value:
        raise bad_request(f"'{key}' must not be empty", code)
    if len(value) > limit:
        raise bad_request(f"'{key}' is longer than {limit} characters", code)
    if _CONTROL.search(value):
        raise bad_request(f"'{key}' contains control characters or a backslash", code)
    return value


def _person_name(obj: dict[str, Any], key: str, code: str) -> str:
    """A DICOM person name ``Family^Given^Middle^Prefix^Suffix`` (at most 64
    characters per component group)."""
    value = _text(obj, key, 3 * 64 + 2, code=code)
    groups = value.split("=")
    if len(groups) > 3 or any(len(g) > 64 or g.count("^") > 4 for g in groups):
        raise bad_request(f"'{key}' is not a person name like Family^Given", code)
    return value


def _device(obj: dict[str, Any]) -> str:
    device = _text(obj, "device", 64, required=True)
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", device):
        raise bad_request("'device' is not a device name of this gateway", "unknown_device")
    return device


def _is_date(text: str) -> bool:
    if not _DATE.match(text):
        return False
    try:
        datetime.strptime(text, "%Y%m%d")
    except ValueError:
        return False
    return True


def _patient(raw: object) -> PatientContext:
    code = "bad_patient"
    if not isinstance(raw, dict):
        raise bad_request("'patient' must be an object", code)
    _only(raw, {"id", "issuer", "name", "birth_date", "sex"}, "'patient'")
    birth = _text(raw, "birth_date", 8, code=code)
    if birth and not _is_date(birth):
        raise bad_request("'birth_date' must be a date as YYYYMMDD", code)
    sex = _text(raw, "sex", 1, code=code)
    if sex not in ("", "F", "M", "O"):
        raise bad_request("'sex' must be F, M or O", code)
    return PatientContext(
        patient_name=_person_name(raw, "name", code),
        patient_id=_text(raw, "id", 64, required=True, code=code),
        issuer_of_patient_id=_text(raw, "issuer", 64, code=code),
        birth_date=birth,
        sex=sex,
    )


#: The keys naming whom a new session is for (exactly one per request).
_WHO = ("worklist_item", "accession_number", "scheduled_procedure_step_id", "patient",
        "unidentified")  # fmt: skip


def _who(obj: dict[str, Any]) -> SessionRequest:
    given = [k for k in _WHO if k in obj]
    if len(given) != 1:
        raise bad_request(
            "give exactly one of 'accession_number', 'scheduled_procedure_step_id', "
            "'worklist_item', 'patient' or 'unidentified'"
        )
    key = given[0]
    if key == "worklist_item":
        return PickItem(item_key=_text(obj, key, 200, required=True))
    if key == "accession_number":
        return PickItem(accession_number=_text(obj, key, 16, required=True))
    if key == "scheduled_procedure_step_id":
        return PickItem(sps_id=_text(obj, key, 16, required=True))
    if key == "patient":
        return TypedPatient(_patient(obj["patient"]))
    if obj["unidentified"] is not True:
        raise bad_request("'unidentified' must be true")
    return Unidentified()


@dataclass(frozen=True, slots=True)
class NewSession:
    """``POST /api/v1/sessions``: a session for ``device``; ``operator`` as the
    request names it ("" when it does not)."""

    device: str
    request: SessionRequest
    operator: str


def session_request(obj: dict[str, Any]) -> NewSession:
    """The body of ``POST /api/v1/sessions``."""
    _only(obj, {"device", "operator", *_WHO})
    return NewSession(_device(obj), _who(obj), _person_name(obj, "operator", "bad_request"))


def lesion_request(obj: dict[str, Any]) -> LesionRequest:
    """The body of ``POST /api/v1/sessions/{ID}/lesion``."""
    code = "bad_lesion"
    _only(obj, {"tracking_id", "site", "laterality", "description"})
    tracking_id = _text(obj, "tracking_id", 64, code=code)
    site = _text(obj, "site", 64, code=code)
    if bool(tracking_id) == bool(site):
        raise bad_request("give either 'tracking_id' or 'site' (with 'laterality')", code)
    laterality_text = _text(obj, "laterality", 1, code=code)
    if tracking_id and ("laterality" in obj or "description" in obj):
        raise bad_request("'tracking_id' names an existing lesion: no other keys", code)
    try:
        laterality = Laterality(laterality_text) if laterality_text else None
    except ValueError:
        raise bad_request("'laterality' must be R, L, B or U", code) from None
    if site and not re.fullmatch(r"([A-Za-z0-9_.-]{1,16}:)?[A-Za-z0-9._-]{1,40}", site):
        raise bad_request("'site' must be a code like SCT:66643007", "unknown_site")
    return LesionRequest(
        tracking_id=tracking_id or None,
        site=site or None,
        laterality=laterality,
        description=_text(obj, "description", 64, code=code),
    )


def _an_id(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise bad_request(f"'{key}' must hold positive integers")
    return value


@dataclass(frozen=True, slots=True)
class Assignment:
    """``POST /api/v1/held/assign``: ``spool_ids`` to an existing ``session_id``, or
    to a new session (``new``)."""

    spool_ids: list[int]
    session_id: int | None
    new: NewSession | None


def assign_request(obj: dict[str, Any]) -> Assignment:
    """The body of ``POST /api/v1/held/assign``."""
    _only(obj, {"spool_ids", "session", "device", "operator", *_WHO})
    raw = obj.get("spool_ids")
    if not isinstance(raw, list) or not raw:
        raise bad_request("'spool_ids' must be a non-empty list of spool ids")
    if len(raw) > MAX_SPOOL_IDS:
        raise bad_request(f"at most {MAX_SPOOL_IDS} spool ids at once")
    spool_ids = [_an_id(v, "spool_ids") for v in raw]
    if len(set(spool_ids)) != len(spool_ids):
        raise bad_request("'spool_ids' names a capture twice")
    rest = {k: v for k, v in obj.items() if k != "spool_ids"}
    if "session" in rest:
        if len(rest) != 1:
            raise bad_request("give 'session' or the keys of a new session, not both")
        return Assignment(spool_ids, _an_id(rest["session"], "session"), None)
    if "device" not in rest:
        raise bad_request("give 'session', or 'device' and whom a new session is for")
    return Assignment(spool_ids, None, session_request(rest))


def search_text(query: str | None) -> str:
    """The worklist search (``?q=``): at most :data:`MAX_SEARCH` printable characters."""
    text = (query or "").strip()
    if len(text) > MAX_SEARCH:
        raise bad_request(f"'q' is longer than {MAX_SEARCH} characters")
    if _CONTROL.search(text):
        raise bad_request("'q' contains control characters or a backslash")
    return text


def path_id(text: str, code: str) -> int:
    """An id from the path (ASCII digits by the route); beyond SQLite's integers it
    can name nothing: 404 with ``code``."""
    value = int(text)
    if not 1 <= value <= MAX_ID:
        raise ApiError(404, code, f"no such id: {value}")
    return value


# --------------------------------------------------------------------------- views


def _patient_json(p: PatientContext) -> dict[str, str]:
    return {"id": p.patient_id, "issuer": p.issuer_of_patient_id, "name": p.patient_name,
            "birth_date": p.birth_date, "sex": p.sex}  # fmt: skip


def _codes(codes: tuple[Coded, ...]) -> list[dict[str, str]]:
    return [{"value": c.value, "scheme": c.scheme, "meaning": c.meaning} for c in codes]


def lesion_json(view: LesionView) -> dict[str, Any]:
    """One lesion."""
    return {
        "id": view.id,
        "tracking_id": view.tracking_id,
        "tracking_uid": view.tracking_uid,
        "site": None if view.site is None else f"{view.site_scheme}:{view.site}",
        "site_meaning": view.site_meaning,
        "laterality": None if view.laterality is None else str(view.laterality),
        "description": view.description,
    }


def session_json(view: SessionView) -> dict[str, Any]:
    """One session (``session`` is its id)."""
    return {
        "session": view.id,
        "device": view.device,
        "source": str(view.source),
        "patient": _patient_json(view.patient),
        "study_instance_uid": view.study_uid,
        "accession_number": view.accession_number,
        "procedure": view.procedure,
        "opened_at": view.opened_at,
        "opened_by": view.opened_by,
        "operator": view.operator_name,
        "closed_at": view.closed_at,
        "open": view.closed_at is None,
        "lesion": None if view.lesion is None else lesion_json(view.lesion),
        "sensitive": view.sensitive,
        "captures": view.captures,
    }


def held_json(view: HeldView) -> dict[str, Any]:
    """One held capture (no patient data)."""
    return {"spool_id": view.spool_id, "device": view.device, "received_at": view.received_at,
            "reason": view.reason, "expires_at": view.expires_at}  # fmt: skip


def worklist_json(entry: WorklistEntry) -> dict[str, Any]:
    """One worklist item (use ``key`` as ``worklist_item`` to open a session)."""
    return {
        "key": entry.key,
        "patient": _patient_json(entry.patient),
        "study_instance_uid": entry.study_uid,
        "accession_number": entry.accession_number,
        "referring_physician": entry.referring_physician,
        "requested_procedure_id": entry.requested_procedure_id,
        "requested_procedure_description": entry.requested_procedure_description,
        "requested_procedure_codes": _codes(entry.requested_procedure_codes),
        "scheduled_procedure_step_id": entry.sps_id,
        "scheduled_procedure_step_description": entry.sps_description,
        "scheduled_start": (entry.sps_start_date + " " + entry.sps_start_time).strip(),
        "modality": entry.modality,
        "station_ae_title": entry.station_ae_title,
        "performing_physician": entry.performing_physician,
        "fetched_at": entry.fetched_at,
    }


def status_json(status: WorklistStatus | None, now: float) -> dict[str, Any] | None:
    """The worklist cache's state (no patient data); None without a worklist."""
    if status is None:
        return None
    age = status.age(now)
    return {"items": status.items, "age_seconds": None if age is None else round(age),
            "stale": status.stale, "error": status.error,
            "truncated": status.truncated}  # fmt: skip
