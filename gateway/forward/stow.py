"""STOW-RS to a DICOMweb store (``kind = "dicomweb"``), QIDO-RS read-back and probe.

Requests (PS3.18 §10.5) go to the study-scoped URL ``{url}/studies/{Study Instance
UID}`` as ``multipart/related; type="application/dicom"`` (aiohttp leaves ``type=``
out; Orthanc answers 415 without it), streamed from the Part 10 files on disk with
a Content-Length (chunked uploads are several times slower on Orthanc), so memory
stays flat whatever the size. The instances of a batch are grouped per study; small
ones share a request up to ``max_request_mb``, a larger one goes alone (a store such
as Orthanc holds a whole request in memory). The answer is asked for as
``application/dicom+json`` (DICOM XML is read too).

Every instance's outcome comes from the answer's Referenced SOP Sequence
(0008,1199) and Failed SOP Sequence (0008,1198), never from the HTTP status alone
(Orthanc answers 409 with one instance of the batch stored, 400 with the good parts
stored). How the rest is classified:

==============================  ==========================================  ===========
Answer                          Instance                                    Verdict
==============================  ==========================================  ===========
any                             in Referenced SOP Sequence                  SUCCESS
                                (with a Warning Reason)                     WARNING
any                             failed, reason 0xB00E (Azure 45070) or      WARNING, not
                                0x0111: already stored                      confirmed [1]
any                             failed, other reason                        as C-STORE [2]
2xx, 409, other                 in neither sequence                         RETRYABLE
400, 415                        in neither, several such in the request     sent alone
400, 415                        in neither, alone in the request            PERMANENT
413                             several in the request                      sent alone
413                             alone in the request                        PERMANENT
401, 403                        (token dropped, asked once more) then       RETRYABLE
408, 429, 503                   after ``Retry-After`` (seconds or a date)   RETRYABLE
other (3xx, 404, 5xx)                                                       RETRYABLE
connection refused, timeout     unreachable                                 RETRYABLE
(no request)                    credentials or CA file unusable, token      RETRYABLE
                                endpoint down (``AuthError``)
==============================  ==========================================  ===========

[1] counted as SENT; the read-back (:mod:`gateway.forward.readback`) confirms it,
also with ``confirm = "response"``. [2] the Failure Reason is classified like a
C-STORE status (:func:`gateway.forward.cstore.classify_status`): 0xA9xx, 0xC0xx,
0x0122 … PERMANENT, 0xA7xx, 0x0110 … RETRYABLE. PERMANENT quarantines the capture
for this destination with the reason; "not retrying blindly" means a refused
multi-instance request is split, so only the instance at fault is set aside.

Redirects are not followed (credentials go only to the configured host). Logs
carry HTTP statuses, counts and failure codes, never the store's words, a header
or a credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import ssl
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pydicom

from gateway.core.config import DicomwebDestination
from gateway.core.errors import DeliveryError, DeliveryErrorCode
from gateway.forward.bucket import TokenBucket
from gateway.forward.cstore import StoreOutcome, StoreRequest, Verdict
from gateway.forward.http_auth import (
    AuthError,
    HttpCredentials,
    certificate_problem,
    client_ssl_context,
    credentials_for,
)
from gateway.forward.stow_answer import (
    StowAnswer,
    parse_qido_uids,
    parse_stow_answer,
    retry_after_seconds,
)
from gateway.forward.stow_plan import (
    MIB,
    REFUSED,
    StowItem,
    for_all,
    judge,
    not_listed,
    plan_requests,
    read_header,
)

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
_ANSWER_LIMIT = 16 * 1024 * 1024  # an answer lists UIDs: a larger one is not read
_QIDO_PAGE = 1000
_QIDO_PAGES_MAX = 100
_WAIT = {408, 429, 503}


class StoreUnavailable(Exception):
    """A QIDO-RS request did not get an answer that can be read; ``error`` says why."""

    def __init__(self, error: DeliveryError) -> None:
        super().__init__(error.detail)
        self.error = error


class _Unusable:
    """Credentials that cannot be used (the CA file could not be read): every request
    fails with the reason, so the service runs and shows it instead of stopping."""

    def __init__(self, error: AuthError) -> None:
        self._error = error

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        """Never any: the reason, every time."""
        raise self._error

    def rejected(self) -> None:
        """Nothing cached."""


def _unreachable(name: str, err: BaseException) -> DeliveryError:
    """Why a store could not be reached: a refused certificate in words a technician
    can act on (:func:`~gateway.forward.http_auth.certificate_problem`), else the kind
    of network failure."""
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        return DeliveryError(DeliveryErrorCode.TLS_UNTRUSTED, f"{name}: {certificate_problem(err)}")
    return DeliveryError(
        DeliveryErrorCode.UNREACHABLE,
        f"{name}: cannot reach the DICOMweb store ({type(err).__name__})",
    )


class _PacedReader(io.BufferedReader):
    """A file whose reads wait for the destination's token bucket (``max_mbps``).

    aiohttp reads a request body part from a file on an executor thread, chunk by
    chunk, as the socket takes it, so waiting here paces the bytes on the wire
    without holding more than one chunk (a file object: aiohttp still sends its
    Content-Length from the file's size).
    """

    def __init__(self, raw: io.RawIOBase, bucket: TokenBucket) -> None:
        super().__init__(raw)
        self._bucket = bucket

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self._bucket.take(len(data))
        return data


def _open_paced(path: Path, bucket: TokenBucket | None) -> io.BufferedReader:
    """``path`` opened for reading, paced by ``bucket`` when there is one."""
    if bucket is None:
        return path.open("rb")
    return _PacedReader(io.FileIO(path, "rb"), bucket)


class StowSender:
    """Sends batches of Part 10 files to one DICOMweb store by STOW-RS."""

    probe_name = "QIDO-RS"

    def __init__(
        self,
        destination: DicomwebDestination,
        credentials: HttpCredentials | None = None,
        *,
        bucket: TokenBucket | None = None,
    ) -> None:
        self.destination = destination
        self._bucket = bucket
        self._refused = False
        try:
            self._ssl = client_ssl_context(destination.tls_ca)
        except AuthError as err:  # a CA file missing or unreadable: say so on every try
            self._ssl = ssl.create_default_context()
            credentials = _Unusable(err)
        self._credentials = credentials or credentials_for(destination, self._ssl)

    def _note_credentials(self, *, refused: int | None) -> None:
        """Log when the store starts or stops refusing our credentials (a change of
        state, once; the per-capture reason is in the ledger)."""
        if (refused is not None) == self._refused:
            return
        self._refused = refused is not None
        if refused is not None:
            log.warning(
                "%s: the store refused the credentials (HTTP %d) even after they were "
                "fetched again; check auth and its files; will keep retrying",
                self.destination.name,
                refused,
            )
        else:
            log.info("%s: the store accepts the credentials again", self.destination.name)

    def session(self) -> aiohttp.ClientSession:
        """A client session for this store (certificates always verified)."""
        d = self.destination
        return aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=d.request_timeout, sock_connect=d.connect_timeout),
            connector=aiohttp.TCPConnector(ssl=self._ssl),
        )

    async def send(
        self,
        requests: Sequence[StoreRequest],
        stop: threading.Event,
        on_outcome: Callable[[StoreOutcome], None],
    ) -> None:
        """Send ``requests``; every outcome goes to ``on_outcome`` as soon as known.

        ``stop`` is checked between HTTP requests: the request in flight finishes,
        the instances not yet sent come back NOT_ATTEMPTED.
        """
        items: list[StowItem] = []
        for request in requests:
            try:
                items.append(await asyncio.to_thread(read_header, request))
            except (OSError, AttributeError, ValueError, pydicom.errors.InvalidDicomError) as err:
                on_outcome(
                    StoreOutcome(
                        request.spool_id,
                        Verdict.RETRYABLE,
                        f"cannot read DICOM file: {type(err).__name__}",
                        code=DeliveryErrorCode.LOCAL_FILE,
                    )
                )
        planned = plan_requests(items, self.destination.max_request_mb * MIB)
        async with self.session() as session:
            for index, chunk in enumerate(planned):
                if stop.is_set():
                    for rest in planned[index:]:
                        for item in rest:
                            on_outcome(
                                StoreOutcome(
                                    item.request.spool_id, Verdict.NOT_ATTEMPTED, "shutting down"
                                )
                            )
                    return
                for outcome in await self._store(session, chunk):
                    on_outcome(outcome)

    async def _store(
        self, session: aiohttp.ClientSession, chunk: list[StowItem]
    ) -> list[StoreOutcome]:
        """One STOW-RS request (split when the store refuses a multi-instance request)."""
        answered = await self._post(session, chunk)
        if isinstance(answered, list):
            return answered
        status, answer, retry_after = answered
        outcomes: list[StoreOutcome] = []
        unlisted: list[StowItem] = []
        for item in chunk:
            outcome = judge(item, answer, self.destination.confirm)
            if outcome is None:
                unlisted.append(item)
            else:
                outcomes.append(outcome)
        if status in (*REFUSED, 413) and len(unlisted) > 1:
            log.info(
                "%s: HTTP %d for a request of %d instances; sending them one by one",
                self.destination.name,
                status,
                len(unlisted),
            )
            for item in unlisted:
                outcomes.extend(await self._store(session, [item]))
            return outcomes
        name = self.destination.name
        outcomes.extend(not_listed(item, name, status, retry_after) for item in unlisted)
        return outcomes

    async def _post(
        self, session: aiohttp.ClientSession, chunk: list[StowItem]
    ) -> list[StoreOutcome] | tuple[int, StowAnswer, float | None]:
        """POST the chunk; its answer, or outcomes for all when there is none to read."""
        d = self.destination
        url = f"{d.url}/studies/{quote(chunk[0].study_uid, safe='')}"
        for attempt in (1, 2):
            try:
                auth = await self._credentials.headers(session)
            except AuthError as err:
                return for_all(
                    chunk, Verdict.RETRYABLE, f"{d.name}: {err}", DeliveryErrorCode.AUTH_UNAVAILABLE
                )
            with contextlib.ExitStack() as files:
                writer = aiohttp.MultipartWriter("related")
                try:
                    for item in chunk:
                        writer.append(
                            files.enter_context(_open_paced(item.request.path, self._bucket)),
                            {"Content-Type": "application/dicom"},
                        )
                except OSError as err:  # gone since its header was read
                    return for_all(
                        chunk,
                        Verdict.RETRYABLE,
                        f"cannot read DICOM file: {type(err).__name__}",
                        DeliveryErrorCode.LOCAL_FILE,
                    )
                headers = {
                    **auth,
                    "Accept": DICOM_JSON,
                    "Content-Type": (
                        f'multipart/related; type="application/dicom"; boundary={writer.boundary}'
                    ),
                }
                try:
                    async with session.post(
                        url, data=writer, headers=headers, allow_redirects=False
                    ) as response:
                        status = response.status
                        body = await _read_limited(response)
                        content_type = response.headers.get("Content-Type", "")
                        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                        if retry_after is not None:  # never longer than our own longest wait
                            retry_after = min(retry_after, d.retry_max)
                except TimeoutError:
                    return for_all(
                        chunk,
                        Verdict.RETRYABLE,
                        f"{d.name}: no STOW-RS answer within {d.request_timeout:.0f} s",
                        DeliveryErrorCode.NO_RESPONSE,
                        unreachable=True,
                    )
                except (aiohttp.ClientError, OSError) as err:
                    failure = _unreachable(d.name, err)
                    return for_all(
                        chunk, Verdict.RETRYABLE, failure.detail, failure.code, unreachable=True
                    )
            log.debug("%s: STOW-RS of %d instance(s): HTTP %d", d.name, len(chunk), status)
            if status in (401, 403):
                self._credentials.rejected()
                if attempt == 1:
                    continue
                self._note_credentials(refused=status)
                return for_all(
                    chunk,
                    Verdict.RETRYABLE,
                    f"{d.name}: HTTP {status}: the store refused the credentials",
                    DeliveryErrorCode.AUTH_REFUSED,
                    status=status,
                )
            self._note_credentials(refused=None)
            if status in _WAIT:
                return for_all(
                    chunk,
                    Verdict.RETRYABLE,
                    f"{d.name}: HTTP {status}: the store asks to try later"
                    + ("" if retry_after is None else f" (in {retry_after:.0f} s)"),
                    DeliveryErrorCode.HTTP_ERROR,
                    status=status,
                    unreachable=status == 503,
                    retry_after=retry_after,
                )
            return status, parse_stow_answer(body, content_type), retry_after
        raise AssertionError("unreachable")  # pragma: no cover

    async def _get(
        self, session: aiohttp.ClientSession, path: str, params: dict[str, str]
    ) -> bytes:
        """GET (QIDO-RS) with the credentials, asked again once after 401/403."""
        d = self.destination
        for attempt in (1, 2):
            try:
                auth = await self._credentials.headers(session)
            except AuthError as err:
                raise StoreUnavailable(
                    DeliveryError(DeliveryErrorCode.AUTH_UNAVAILABLE, f"{d.name}: {err}")
                ) from None
            try:
                async with session.get(
                    f"{d.url}{path}",
                    params=params,
                    headers={**auth, "Accept": DICOM_JSON},
                    allow_redirects=False,
                ) as response:
                    status = response.status
                    body = await _read_limited(response)
            except TimeoutError:
                raise StoreUnavailable(
                    DeliveryError(
                        DeliveryErrorCode.NO_RESPONSE, f"{d.name}: no QIDO-RS answer in time"
                    )
                ) from None
            except (aiohttp.ClientError, OSError) as err:
                raise StoreUnavailable(_unreachable(d.name, err)) from None
            if status in (401, 403):
                self._credentials.rejected()
                if attempt == 1:
                    continue
                raise StoreUnavailable(
                    DeliveryError(
                        DeliveryErrorCode.AUTH_REFUSED,
                        f"{d.name}: HTTP {status}: the store refused the credentials",
                        status,
                    )
                )
            if status not in (200, 204):
                raise StoreUnavailable(
                    DeliveryError(
                        DeliveryErrorCode.HTTP_ERROR, f"{d.name}: QIDO-RS HTTP {status}", status
                    )
                )
            return body
        raise AssertionError("unreachable")  # pragma: no cover

    async def list_instances(self, session: aiohttp.ClientSession, study_uid: str) -> set[str]:
        """SOP Instance UIDs QIDO-RS lists in one study (paged); raises StoreUnavailable."""
        found: set[str] = set()
        path = f"/studies/{quote(study_uid, safe='')}/instances"
        for page in range(_QIDO_PAGES_MAX):
            params = {
                "includefield": "00080018",
                "limit": str(_QIDO_PAGE),
                "offset": str(page * _QIDO_PAGE),
            }
            body = await self._get(session, path, params)
            try:
                uids = parse_qido_uids(body)
            except ValueError:
                raise StoreUnavailable(
                    DeliveryError(
                        DeliveryErrorCode.HTTP_ERROR,
                        f"{self.destination.name}: a QIDO-RS answer that is not DICOM JSON",
                    )
                ) from None
            found.update(uids)
            if len(uids) < _QIDO_PAGE:
                break
        return found

    async def probe(self) -> DeliveryError | None:
        """Ask the store for one study (QIDO-RS): None when it answers, else why not."""
        try:
            async with self.session() as session:
                await self._get(session, "/studies", {"limit": "1"})
        except StoreUnavailable as failure:
            return failure.error
        return None

    async def rest(self) -> None:
        """Nothing to close: each batch's HTTP session ends with it."""


async def _read_limited(response: aiohttp.ClientResponse) -> bytes:
    """The answer body, at most ``_ANSWER_LIMIT`` bytes (the rest is left unread)."""
    body = bytearray()
    while len(body) < _ANSWER_LIMIT:
        chunk = await response.content.read(min(1 << 16, _ANSWER_LIMIT - len(body)))
        if not chunk:
            break
        body.extend(chunk)
    return bytes(body)


__all__ = ["StoreUnavailable", "StowSender"]
