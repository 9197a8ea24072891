"""What a technician does next about a capture set aside, in plain words.

A quarantine reason names the technical cause ("site-pacs refused it: …", "no route
sends it anywhere: …", a wrapping error); the capture page shows it, and under it the
next step this module finds for it: from the failed deliveries' error codes
(:class:`~gateway.core.errors.DeliveryErrorCode`, kept in the ledger) first, then from
the reasons the spool and the wrapper set. Fixed sentences only: nothing of the
reason (which may quote a peer) is repeated here.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.core.errors import DeliveryErrorCode
from gateway.spool.admin import RESOLVED_PREFIX
from gateway.spool.rebuild import RAW_ONLY_REASON
from gateway.spool.routing import NO_ROUTE_REASON

_RETRY = " Then press Retry."

#: A destination's refusal (the failed delivery's error code) → what to do.
BY_CODE: dict[str, str] = {
    DeliveryErrorCode.NOT_ACCEPTED: (
        "The PACS does not accept this kind of image. Ask the PACS administrator to "
        "accept its SOP class (the conformance statement lists it), or set "
        'fallback = "compatible" for this destination so a compatible copy is sent.' + _RETRY
    ),
    DeliveryErrorCode.STORE_FAILED: (
        "The PACS refused to store it. Ask the PACS administrator what the PACS log says "
        "about this image (the SOP Instance UID above finds it)." + _RETRY
    ),
    DeliveryErrorCode.COMMITMENT_FAILED: (
        "The PACS could not confirm that it keeps this image. Ask the PACS administrator "
        "to check its storage." + _RETRY + " It is sent again."
    ),
    DeliveryErrorCode.LOCAL_FILE: (
        "The box could not read its own DICOM file (a damaged SD card?). Download the "
        "file to keep a copy, take the picture again on the device, then Resolve this one."
    ),
    DeliveryErrorCode.TOO_LARGE: (
        "The image is larger than the DICOMweb store accepts. Set a smaller "
        "max_request_mb for this destination, or ask its administrator to raise the "
        "limit." + _RETRY
    ),
    DeliveryErrorCode.REQUEST_REFUSED: (
        "The DICOMweb store refused the request. Ask its administrator what its log "
        "says about this image." + _RETRY
    ),
    DeliveryErrorCode.NOT_STORED: (
        "The DICOMweb store did not keep this image. Ask its administrator what its log "
        "says." + _RETRY
    ),
    DeliveryErrorCode.HTTP_ERROR: (
        "The DICOMweb store answered with an error. Ask its administrator what its log "
        "says." + _RETRY
    ),
    DeliveryErrorCode.AUTH_REFUSED: (
        "The store refused the box's credentials. Correct the destination's user, "
        "password or token (ask the PACS administrator)." + _RETRY
    ),
    DeliveryErrorCode.TLS_UNTRUSTED: (
        "The box does not trust the PACS's certificate. Check tls_ca for this destination "
        "and the certificate's expiry (\"Why isn't it sending?\" says which)." + _RETRY
    ),
    DeliveryErrorCode.TLS_REFUSED: (
        "The PACS refused the box's TLS connection. Ask the PACS administrator to accept "
        "the box's client certificate." + _RETRY
    ),
}

NO_ROUTE = (
    "No route sends this kind of capture anywhere. Add a [[routes]] entry that matches it "
    "(the reason lists its device class, driver and SOP class) and restart DermGate." + _RETRY
)
REBUILT = (
    "DermGate cannot make this into DICOM (the ledger was rebuilt). Download the raw file, "
    "take the picture again on the device or send it by hand, then Resolve this one."
)
FILE_MISSING = (
    "The capture's file is gone from the box. Take the picture again on the device, "
    "then Resolve this one."
)
DRIVER = (
    "The device driver sent something DermGate cannot use. Check or update the driver "
    "(the service log names it); the capture is kept." + _RETRY
)
DAMAGED = (
    "The device's file cannot be made into DICOM (damaged, or a format DICOM cannot carry). "
    "Take the picture again on the device and Resolve this one; if it happens again, "
    "download the file for the device's support."
)
FALLBACK = (
    "Fix the cause shown in the reason, then press Retry; if you cannot, download the "
    "file and Resolve this one."
)


def next_step(reason: str | None, error_codes: Iterable[str | None]) -> str | None:
    """The next step for a capture set aside with ``reason`` whose failed deliveries
    have ``error_codes``; None when there is nothing to do (no reason, or resolved)."""
    if not reason or reason.startswith(RESOLVED_PREFIX):
        return None
    for code in error_codes:
        if code is not None and code in BY_CODE:
            return BY_CODE[code]
    if reason.startswith(NO_ROUTE_REASON):
        return NO_ROUTE
    if reason == RAW_ONLY_REASON:
        return REBUILT
    if "file missing" in reason or "file is gone" in reason:
        return FILE_MISSING
    if "driver" in reason:
        return DRIVER
    if " refused it: " in reason:
        return FALLBACK
    return DAMAGED
