"""C-STORE to a DICOM destination: pynetdicom behind one thread seam.

:meth:`CStoreSender.send_batch` is blocking; the forwarder runs it with
``asyncio.to_thread``. One association carries a batch (the forwarder's sender keeps
it open for the next batch while deliveries are due: :mod:`.kept`); it is always
closed with A-RELEASE (never A-ABORT) unless the peer aborted it first. Each
instance goes out through :mod:`.direct_store` (pynetdicom's ``send_c_store`` only
for what that does not cover). Files are streamed
from disk, not decoded into memory: a C-STORE's P-DATA-TF PDUs are written by
:mod:`gateway.forward.stream` in 1 MiB bursts as the socket takes them, so memory
stays flat whatever the object's size.

How the PACS's answer is classified (PS3.4 Annex B.2.3 and PS3.7 Annex C):

=================================  ==============================  ===========
Status / event                     Meaning                         Verdict
=================================  ==============================  ===========
0x0000                             Success                         SUCCESS
0x0001, 0x0107, 0x0116, 0xB000,    Stored with a warning           WARNING
0xB006, 0xB007                     (coercion, elements discarded)  (delivered)
0xA700-0xA7FF, 0x0213              Out of resources                RETRYABLE
0x0110                             Processing failure              RETRYABLE
0xFE00                             Cancelled                       RETRYABLE
0xA900-0xA9FF                      Data set does not match class   PERMANENT
0xC000-0xCFFF                      Cannot understand               PERMANENT
0x0117                             Invalid SOP instance            PERMANENT
0x0122                             SOP class not supported         PERMANENT
0x0124                             Not authorised                  PERMANENT
0x0211, 0x0212                     Unrecognised op / mistyped arg  PERMANENT
any other status                   Unknown                         RETRYABLE
no response, empty status          Peer silent or gone             RETRYABLE
association rejected / aborted     Peer unavailable                RETRYABLE
TCP connection refused / timeout   Peer unreachable                RETRYABLE
TLS handshake failed               Certificate or version refused  RETRYABLE
no accepted presentation context   PACS does not take this class   PERMANENT
=================================  ==============================  ===========

A SOP class the PACS does not take is known at association time: its presentation
context comes back rejected. Such an instance is not sent; its outcome is PERMANENT
with the code ``NOT_ACCEPTED`` and the reason :func:`not_accepted_reason` (the
destination's ``fallback = "quarantine"``), and the other instances of the batch
go on the same association. With ``fallback = "compatible"`` the association also
proposes the compatible class of each class in the batch
(:func:`~gateway.forward.contexts.storage_contexts`); when the original's context
is refused and the compatible one accepted, the request's derived object
(:class:`CompatibleCopy`) is sent instead on the same association if it is already
on disk, else the outcome is ``DERIVE`` (the forwarder derives it off the
association and sends it at once). A class without a substitute (OBJ/MTL/STL), or
whose substitute is refused too, is PERMANENT with the reason, which says so.
A PACS that accepts none of the proposed contexts answers the association request,
but pynetdicom then aborts it: that too is a refusal of those classes, not an
unreachable PACS.

PERMANENT means retrying the same bytes cannot help: the capture is quarantined
with the reason and stays in the spool until a technician acts. Everything else is
retried with backoff, for ever, with the same SOP Instance UID.

Every failed outcome also says why, as a :class:`~gateway.core.errors.DeliveryErrorCode`
set here, where the reason is known (the state document and the page show the
code's phrase, never the peer's words).
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pynetdicom import AE, _config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from gateway.core.config import DicomDestination
from gateway.core.errors import DeliveryError, DeliveryErrorCode
from gateway.dicom.network import dermgate_ae
from gateway.dicom.sop_classes import NO_SUBSTITUTE, uid_name
from gateway.forward.association import accepted_pairs, associate, refused_everything, tls_error
from gateway.forward.bucket import TokenBucket
from gateway.forward.contexts import storage_contexts
from gateway.forward.direct_store import DirectStore
from gateway.forward.kept import Kept, KeptAssociations

# The reasons live in gateway.forward.refusals; re-exported for callers of this module.
from gateway.forward.refusals import (
    no_substitute_reason as no_substitute_reason,
)
from gateway.forward.refusals import (
    not_accepted_reason as not_accepted_reason,
)
from gateway.forward.refusals import (
    substitute_refused_reason as substitute_refused_reason,
)
from gateway.forward.stream import stream_c_store

log = logging.getLogger(__name__)

# Leave the data set in its file instead of decoding it into memory; the writer that
# reads it from there, burst by burst, is gateway.forward.stream.
_config.STORE_SEND_CHUNKED_DATASET = True
# pynetdicom's logging is quieted and its socket leak fixed by gateway.dicom.network.
# Its "standard" log handlers still run on every PDU and DIMSE message sent or
# received (decoding command sets and formatting lines that the quieted logger then
# drops): ~8 % of the forwarder's CPU in a backlog drain of small instances. Binding
# none (set before any Association is made; it binds them at creation) changes no
# output.
_config.LOG_HANDLER_LEVEL = "none"


class Verdict(enum.Enum):
    """What to do after one C-STORE attempt."""

    SUCCESS = "success"
    WARNING = "warning"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"
    NOT_ATTEMPTED = "not-attempted"
    DERIVE = "derive"
    """Not sent: the class is refused but its compatible class accepted, and the
    derived object is not written yet."""

    @property
    def delivered(self) -> bool:
        """True when the PACS stored the instance."""
        return self in (Verdict.SUCCESS, Verdict.WARNING)


_WARNINGS = {0x0001, 0x0107, 0x0116, 0xB000, 0xB006, 0xB007}
_PERMANENT = {0x0117, 0x0122, 0x0124, 0x0211, 0x0212}
_RETRYABLE = {0x0110, 0x0213, 0xFE00}


def classify_status(status: int) -> Verdict:
    """Classify a C-STORE response status (see the table above)."""
    if status == 0x0000:
        return Verdict.SUCCESS
    if status in _WARNINGS:
        return Verdict.WARNING
    if status in _PERMANENT or 0xA900 <= status <= 0xA9FF or 0xC000 <= status <= 0xCFFF:
        return Verdict.PERMANENT
    if status in _RETRYABLE or 0xA700 <= status <= 0xA7FF:
        return Verdict.RETRYABLE
    return Verdict.RETRYABLE


@dataclass(frozen=True, slots=True)
class StoreRequest:
    """One instance to send (the capture with spool id ``spool_id``), read from its
    Part 10 file."""

    spool_id: int
    path: Path
    sop_class_uid: str
    transfer_syntax_uid: str
    compatible: CompatibleCopy | None = None
    """What to send instead if the PACS refuses ``sop_class_uid`` (``fallback =
    "compatible"``); None: nothing."""


@dataclass(frozen=True, slots=True)
class CompatibleCopy:
    """The derived object of a request: its class, SOP Instance UID and file (which
    may not exist yet); same transfer syntax as the original."""

    sop_class_uid: str
    sop_instance_uid: str
    path: Path


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """The result of one instance; ``detail`` is safe to log (no patient data).

    ``code`` says why it was not delivered (None when it was, or was not attempted).
    ``retry_after``: the receiver asked to wait that many seconds before the next try
    (HTTP ``Retry-After``). ``confirmed``: the answer itself confirms that the
    receiver keeps the instance (a DICOMweb destination with ``confirm = "response"``);
    the delivery is then COMMITTED at once instead of SENT.
    """

    spool_id: int
    verdict: Verdict
    detail: str
    status: int | None = None
    unreachable: bool = False
    code: DeliveryErrorCode | None = None
    sent: CompatibleCopy | None = None
    """The derived object stored instead of the original (None: the original)."""
    derive: StoreRequest | None = None
    """With ``DERIVE``: the request whose compatible copy is to be written."""
    retry_after: float | None = None
    confirmed: bool = False

    @property
    def error(self) -> DeliveryError | None:
        """The failure as the ledger and the state document keep it, if it failed."""
        if self.code is None:
            return None
        return DeliveryError(self.code, self.detail, self.status)


@dataclass(frozen=True, slots=True)
class Negotiation:
    """What a destination answered to every (SOP class, transfer syntax) proposed.

    ``error`` is set when it could not be asked (unreachable, association rejected);
    ``echo_status`` is the C-ECHO status (None: not answered or not possible).
    """

    accepted: tuple[tuple[str, str], ...] = ()
    refused: tuple[tuple[str, str], ...] = ()
    echo_status: int | None = None
    error: DeliveryError | None = None


class CStoreSender:
    """Sends batches of Part 10 files to one destination over one association each."""

    def __init__(
        self,
        calling_ae: str,
        destination: DicomDestination,
        bucket: TokenBucket | None = None,
        *,
        keep_open: bool = False,
    ) -> None:
        self.calling_ae = calling_ae
        self.destination = destination
        self.bucket = bucket
        """Paces the bytes of every association (``max_mbps``); None: no limit."""
        self.kept: KeptAssociations | None = KeptAssociations() if keep_open else None
        """With ``keep_open``: associations kept open between batches until
        :meth:`~gateway.forward.kept.KeptAssociations.release_all` (:mod:`.kept`)."""

    def _ae(self) -> AE:
        ae = dermgate_ae(self.calling_ae)
        d = self.destination
        ae.connection_timeout = d.connect_timeout
        ae.acse_timeout = d.acse_timeout
        ae.dimse_timeout = d.dimse_timeout
        ae.network_timeout = d.network_timeout
        return ae

    def _associate(self, ae: AE) -> Any:
        return associate(ae, self.destination)  # with TLS when the destination says so

    def _unavailable(self, assoc: Any) -> DeliveryError:
        d = self.destination
        tls = tls_error(assoc, d)
        if tls is not None:
            return tls
        where = f"{d.ae_title}@{d.host}:{d.port}"
        if assoc.is_rejected:
            return DeliveryError(
                DeliveryErrorCode.ASSOCIATION_REJECTED, f"association rejected by {where}"
            )
        return DeliveryError(
            DeliveryErrorCode.UNREACHABLE,
            f"could not open an association with {where} (unreachable or aborted)",
        )

    def echo(self) -> DeliveryError | None:
        """C-ECHO the destination; return None on success, else why it failed."""
        ae = self._ae()
        ae.add_requested_context(Verification)
        assoc = self._associate(ae)
        if not assoc.is_established:
            return self._unavailable(assoc)
        try:
            status = assoc.send_c_echo()
        finally:
            if assoc.is_established:
                assoc.release()
        if not status or "Status" not in status:
            return DeliveryError(DeliveryErrorCode.NO_RESPONSE, "no C-ECHO response")
        code = int(status.Status)
        if code == 0:
            return None
        return DeliveryError(DeliveryErrorCode.STORE_FAILED, f"C-ECHO status 0x{code:04X}", code)

    def negotiate(self, proposed: Sequence[tuple[str, Sequence[str]]]) -> Negotiation:
        """C-ECHO the destination on an association proposing Verification and one
        context per (SOP class, transfer syntax) of ``proposed``; blocking.

        The association is released (never aborted) once the C-ECHO is answered.
        """
        ae = self._ae()
        ae.add_requested_context(Verification)
        pairs = [(cls, ts) for cls, syntaxes in proposed for ts in syntaxes]
        for sop_class, syntax in pairs:  # as storage_contexts: one syntax per context
            ae.add_requested_context(sop_class, [syntax])
        assoc = self._associate(ae)
        if not assoc.is_established and not refused_everything(assoc):
            return Negotiation(error=self._unavailable(assoc))
        accepted = accepted_pairs(assoc)
        status = None
        try:
            if assoc.is_established and any(cls == Verification for cls, _ in accepted):
                answer = assoc.send_c_echo()
                status = int(answer.Status) if answer and "Status" in answer else None
        finally:
            if assoc.is_established:
                assoc.release()
        return Negotiation(
            accepted=tuple(p for p in pairs if p in accepted),
            refused=tuple(p for p in pairs if p not in accepted),
            echo_status=status,
        )

    def send_batch(
        self,
        requests: Sequence[StoreRequest],
        stop: threading.Event,
        on_outcome: Callable[[StoreOutcome], None] | None = None,
    ) -> list[StoreOutcome]:
        """Send ``requests`` on one association; one outcome per request, in order.

        ``stop`` is checked between instances: the instance in flight finishes, the
        rest come back NOT_ATTEMPTED, and the association is released. Each outcome
        is also passed to ``on_outcome`` (on this thread) as soon as it is known, so
        the caller can record a delivery while the next instance is on its way.
        """
        outcomes: list[StoreOutcome] = []

        def done(outcome: StoreOutcome) -> None:
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)

        proposed = frozenset(
            storage_contexts(
                ((r.sop_class_uid, r.transfer_syntax_uid) for r in requests),
                compatible=self.destination.fallback == "compatible",
            )
        )
        kept = self.kept.take(proposed) if self.kept is not None else None
        if kept is None:
            kept = self._open(proposed, requests, done)
            if kept is None:
                return outcomes
        assoc, store = kept.assoc, kept.store
        try:
            accepted = accepted_pairs(assoc)
            for request in requests:
                if stop.is_set() or not assoc.is_established:
                    break
                if (request.sop_class_uid, request.transfer_syntax_uid) not in accepted:
                    done(self._refused(store, request, accepted))
                    continue
                done(self._store_one(store, request))
        finally:
            if assoc.is_established:
                if self.kept is None or stop.is_set():
                    assoc.release()
                else:
                    self.kept.give_back(kept)  # released once nothing is due
        for request in requests[len(outcomes) :]:
            if stop.is_set():
                done(StoreOutcome(request.spool_id, Verdict.NOT_ATTEMPTED, "shutting down"))
            else:
                done(
                    StoreOutcome(
                        request.spool_id,
                        Verdict.RETRYABLE,
                        "association closed before sending",
                        code=DeliveryErrorCode.ABORTED,
                    )
                )
        return outcomes

    def _open(
        self,
        proposed: frozenset[tuple[str, str]],
        requests: Sequence[StoreRequest],
        done: Callable[[StoreOutcome], None],
    ) -> Kept | None:
        """Open an association proposing ``proposed``; None (every request's outcome
        given to ``done``) when it could not be used."""
        ae = self._ae()
        for sop_class, syntax in sorted(proposed):
            ae.add_requested_context(sop_class, [syntax])
        assoc = self._associate(ae)
        if refused_everything(assoc):
            for r in requests:
                done(self._refused(DirectStore(assoc), r, set()))
            return None
        if not assoc.is_established:
            error = self._unavailable(assoc)
            for r in requests:
                done(
                    StoreOutcome(
                        r.spool_id,
                        Verdict.RETRYABLE,
                        error.detail,
                        unreachable=True,
                        code=error.code,
                    )
                )
            return None
        stream_c_store(assoc, stall_timeout=self.destination.network_timeout, bucket=self.bucket)
        return Kept(assoc, DirectStore(assoc), proposed)

    def _refused(
        self, store: DirectStore, request: StoreRequest, accepted: set[tuple[str, str]]
    ) -> StoreOutcome:
        """The original's context was refused: send its compatible copy if the PACS
        took that class (``DERIVE`` when the copy is not written yet), else refuse."""
        copy = request.compatible
        if self.destination.fallback != "compatible":
            return self._not_accepted(request, accepted)
        if copy is None:
            if request.sop_class_uid not in NO_SUBSTITUTE:
                return self._not_accepted(request, accepted)
            return StoreOutcome(
                request.spool_id,
                Verdict.PERMANENT,
                no_substitute_reason(request.sop_class_uid),
                code=DeliveryErrorCode.NOT_ACCEPTED,
            )
        if (copy.sop_class_uid, request.transfer_syntax_uid) not in accepted:
            return StoreOutcome(
                request.spool_id,
                Verdict.PERMANENT,
                substitute_refused_reason(request.sop_class_uid, copy.sop_class_uid),
                code=DeliveryErrorCode.NOT_ACCEPTED,
            )
        if not copy.path.exists():
            return StoreOutcome(
                request.spool_id,
                Verdict.DERIVE,
                f"{uid_name(request.sop_class_uid)} refused; {uid_name(copy.sop_class_uid)} "
                "accepted: deriving",
                derive=request,
            )
        substitute = StoreRequest(
            request.spool_id, copy.path, copy.sop_class_uid, request.transfer_syntax_uid
        )
        outcome = self._store_one(store, substitute)
        return replace(outcome, sent=copy) if outcome.verdict.delivered else outcome

    def _not_accepted(self, request: StoreRequest, accepted: set[tuple[str, str]]) -> StoreOutcome:
        """The PACS took no context for this instance: PERMANENT, with the reason."""
        other_syntax = any(cls == request.sop_class_uid for cls, _ in accepted)
        reason = not_accepted_reason(
            request.sop_class_uid, request.transfer_syntax_uid if other_syntax else None
        )
        return StoreOutcome(
            request.spool_id, Verdict.PERMANENT, reason, code=DeliveryErrorCode.NOT_ACCEPTED
        )

    def _store_one(self, store: DirectStore, request: StoreRequest) -> StoreOutcome:
        assoc = store.assoc
        try:
            status = store(request.path)
        except ValueError:
            # The file's own class or syntax differs from the ledger's: no context for it.
            return StoreOutcome(
                request.spool_id,
                Verdict.PERMANENT,
                f"{self.destination.ae_title} accepts no presentation context for "
                f"{request.sop_class_uid} in {request.transfer_syntax_uid}",
                code=DeliveryErrorCode.NOT_ACCEPTED,
            )
        except (OSError, AttributeError) as err:
            return StoreOutcome(
                request.spool_id,
                Verdict.RETRYABLE,
                f"cannot read DICOM file: {type(err).__name__}",
                code=DeliveryErrorCode.LOCAL_FILE,
            )
        if status is None:
            if assoc.is_aborted:
                return StoreOutcome(
                    request.spool_id,
                    Verdict.RETRYABLE,
                    "association aborted",
                    code=DeliveryErrorCode.ABORTED,
                )
            return StoreOutcome(
                request.spool_id,
                Verdict.RETRYABLE,
                "no C-STORE response",
                code=DeliveryErrorCode.NO_RESPONSE,
            )
        verdict = classify_status(status)
        return StoreOutcome(
            request.spool_id,
            verdict,
            f"C-STORE status 0x{status:04X}",
            status,
            code=None if verdict.delivered else DeliveryErrorCode.STORE_FAILED,
        )
