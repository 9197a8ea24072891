"""Why a delivery failed, as a code set where it failed, and the phrase people see.

The C-STORE sender (:mod:`gateway.forward.cstore`), the STOW-RS sender
(:mod:`gateway.forward.stow`; ``status`` is then the HTTP status) and the commitment rules
(:mod:`gateway.spool.commitments`) know why an attempt failed; they say so with a
:class:`DeliveryErrorCode`, kept with the delivery in the ledger (``error_code``,
``error_status``) and by the forwarder in memory. The state document, MQTT and the
page show the code and its fixed phrase (:meth:`DeliveryError.shown`), never the
free text beside it (which may quote what a peer said); only a C-STORE status
number is added to the phrase. The free text (``detail``) goes to the log, the
ledger's ``last_error`` and ``dermgate spool show``, as before.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ERROR_PHRASES", "DeliveryError", "DeliveryErrorCode"]


class DeliveryErrorCode(enum.StrEnum):
    """Why an attempt to deliver to a PACS failed (the value is the code shown)."""

    UNREACHABLE = "unreachable"
    ASSOCIATION_REJECTED = "association_rejected"
    NO_RESPONSE = "no_response"
    ABORTED = "aborted"
    STORE_FAILED = "store_failed"
    NOT_ACCEPTED = "not_accepted"
    LOCAL_FILE = "local_file"
    COMMITMENT_FAILED = "commitment_failed"
    AUTH_REFUSED = "auth_refused"
    AUTH_UNAVAILABLE = "auth_unavailable"
    HTTP_ERROR = "http_error"
    REQUEST_REFUSED = "request_refused"
    TOO_LARGE = "too_large"
    NOT_STORED = "not_stored"
    OTHER = "other"
    TLS_UNTRUSTED = "tls_untrusted"
    TLS_REFUSED = "tls_refused"

    @property
    def phrase(self) -> str:
        """The fixed phrase people see for this code."""
        return ERROR_PHRASES[self]


ERROR_PHRASES: dict[str, str] = {
    DeliveryErrorCode.UNREACHABLE: (
        "cannot open a connection to the PACS (network, address or port)"
    ),
    DeliveryErrorCode.ASSOCIATION_REJECTED: (
        "the PACS rejected the association (AE titles or its settings)"
    ),
    DeliveryErrorCode.NO_RESPONSE: "the PACS did not answer in time",
    DeliveryErrorCode.ABORTED: "the PACS dropped the connection",
    DeliveryErrorCode.STORE_FAILED: "the PACS answered a store request with a failure status",
    DeliveryErrorCode.NOT_ACCEPTED: "the PACS does not accept this kind of object",
    DeliveryErrorCode.LOCAL_FILE: "the gateway could not read its own DICOM file",
    DeliveryErrorCode.COMMITMENT_FAILED: "the PACS could not confirm that it keeps an object",
    DeliveryErrorCode.AUTH_REFUSED: (
        "the DICOMweb store refused the gateway's credentials (user, password or token)"
    ),
    DeliveryErrorCode.AUTH_UNAVAILABLE: (
        "the gateway cannot authenticate to the DICOMweb store now (a credential or CA "
        "file, or the token endpoint)"
    ),
    DeliveryErrorCode.HTTP_ERROR: "the DICOMweb store answered with an HTTP error",
    DeliveryErrorCode.REQUEST_REFUSED: "the DICOMweb store refused the request as malformed",
    DeliveryErrorCode.TOO_LARGE: (
        "the request was too large for the DICOMweb store; set a smaller max_request_mb "
        "or raise the store's limit"
    ),
    DeliveryErrorCode.NOT_STORED: "the DICOMweb store did not list the object as stored",
    DeliveryErrorCode.OTHER: "delivery failed",
    DeliveryErrorCode.TLS_UNTRUSTED: (
        "the PACS's TLS certificate is not trusted (CA, expiry or name; check tls_ca)"
    ),
    DeliveryErrorCode.TLS_REFUSED: (
        "the PACS refused our TLS connection (our client certificate or the TLS version)"
    ),
}
"""Code → the phrase shown on MQTT, in the state document and on the page."""


_HTTP_CODES = {
    DeliveryErrorCode.AUTH_REFUSED,
    DeliveryErrorCode.HTTP_ERROR,
    DeliveryErrorCode.REQUEST_REFUSED,
}


@dataclass(frozen=True, slots=True)
class DeliveryError:
    """One failed attempt: its code, the DIMSE status if the PACS sent one, and the
    text for the log and the ledger (``detail``; may name the peer, never patient data)."""

    code: DeliveryErrorCode
    detail: str
    status: int | None = None

    @property
    def message(self) -> str:
        """The fixed phrase, with the status number for a failed store (the DIMSE
        status, or a STOW-RS Failure Reason) or the HTTP status of a DICOMweb answer."""
        if self.code is DeliveryErrorCode.STORE_FAILED and self.status is not None:
            return f"{self.code.phrase} (0x{self.status:04X})"
        if self.code in _HTTP_CODES and self.status is not None:
            return f"{self.code.phrase} (HTTP {self.status})"
        return self.code.phrase

    def shown(self) -> dict[str, str]:
        """``{"code", "message"}``, as the state document and MQTT carry it."""
        return {"code": str(self.code), "message": self.message}
