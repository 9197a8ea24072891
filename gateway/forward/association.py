"""Opening an association with a DICOM destination, over TLS when it says so.

Every association the forward stage opens to a PACS (C-STORE and the C-ECHO probe in
:mod:`.cstore`, the storage commitment N-ACTION in :mod:`.commitment`, ``dermgate
echo``) goes through :func:`associate`, so ``tls = true`` means TLS for all of them,
with the client context of :mod:`gateway.dicom.tls`. When the association could not
be opened, :func:`tls_error` says whether TLS was the reason, as a typed
:class:`~gateway.core.errors.DeliveryError`: ``tls_untrusted`` (we refused the PACS's
certificate) or ``tls_refused`` (the PACS refused ours, or the TLS version), with the
plain reason and OpenSSL's short words in the detail. Such a failure is retried like
an unreachable PACS (the forwarder's circuit breaker then probes with backoff), since
it ends when a certificate is renewed or a CA installed, without a restart.
"""

from __future__ import annotations

import ssl
import threading
import weakref
from typing import Any

from pynetdicom import AE

from gateway.core.config import DicomDestination
from gateway.core.errors import DeliveryError, DeliveryErrorCode
from gateway.dicom.tls import ClientTls, client_tls, tls_failure

__all__ = ["accepted_pairs", "associate", "refused_everything", "tls_error"]


class _NotAttempted:
    """Stands for an association that could not be attempted (TLS files unreadable)."""

    is_established = False
    is_rejected = False
    is_aborted = False
    accepted_contexts: tuple[Any, ...] = ()
    rejected_contexts: tuple[Any, ...] = ()

    def __init__(self, error: DeliveryError) -> None:
        self.error = error


# The TLS of each association opened here, until the association is gone (several
# worker threads open associations at once: the lock guards the mapping).
_TLS: weakref.WeakKeyDictionary[Any, ClientTls] = weakref.WeakKeyDictionary()
_TLS_LOCK = threading.Lock()


def _where(destination: DicomDestination) -> str:
    return f"{destination.ae_title}@{destination.host}:{destination.port}"


def associate(ae: AE, destination: DicomDestination, **kwargs: Any) -> Any:
    """``ae.associate`` with ``destination`` (its host, port and AE title), with TLS
    when ``destination.tls``; blocking. Never raises for TLS: the association is then
    not established and :func:`tls_error` says why."""
    d = destination
    try:
        tls = client_tls(d)
    except (OSError, ssl.SSLError) as err:
        error = DeliveryError(
            DeliveryErrorCode.OTHER,
            f"cannot read the TLS files of {d.name} ({type(err).__name__}: "
            f"{getattr(err, 'strerror', None) or getattr(err, 'reason', None) or err})",
        )
        return _NotAttempted(error)
    if tls is None:
        return ae.associate(d.host, d.port, ae_title=d.ae_title, **kwargs)
    assoc = ae.associate(d.host, d.port, ae_title=d.ae_title, tls_args=tls.tls_args, **kwargs)
    with _TLS_LOCK:
        _TLS[assoc] = tls
    return assoc


def tls_error(assoc: Any, destination: DicomDestination) -> DeliveryError | None:
    """Why ``assoc`` (from :func:`associate`) failed, if TLS (or its files) was the
    reason; None otherwise."""
    if isinstance(assoc, _NotAttempted):
        return assoc.error
    with _TLS_LOCK:
        tls = _TLS.get(assoc)
    failure = tls.failure if tls is not None else None
    if failure is None:
        return None
    kind = tls_failure(failure, destination.tls_cert)
    words = getattr(failure, "verify_message", None) or failure.reason or type(failure).__name__
    code = DeliveryErrorCode.TLS_UNTRUSTED if kind.untrusted else DeliveryErrorCode.TLS_REFUSED
    return DeliveryError(
        code, f"TLS with {_where(destination)} failed: {kind.value} ({str(words).lower()})"
    )


def accepted_pairs(assoc: Any) -> set[tuple[str, str]]:
    """(SOP class, transfer syntax) of every context the peer accepted on ``assoc``."""
    return {
        (str(cx.abstract_syntax), str(ts))
        for cx in assoc.accepted_contexts
        for ts in cx.transfer_syntax
    }


def refused_everything(assoc: Any) -> bool:
    """True when the peer answered the association but accepted none of its contexts
    (pynetdicom then aborts it): not an unreachable peer."""
    return (
        not assoc.is_established
        and not assoc.is_rejected
        and bool(assoc.rejected_contexts)
        and not assoc.accepted_contexts
    )
