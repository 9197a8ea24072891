"""Why a destination does not get a capture of a SOP class it does not accept.

The reasons say the class's name and UID and what to do, never the peer's words or
patient data; the technician reads them in ``spool show``, on the page and on MQTT.
"""

from __future__ import annotations

from gateway.dicom.sop_classes import uid_name

__all__ = ["no_substitute_reason", "not_accepted_reason", "substitute_refused_reason"]


def not_accepted_reason(sop_class_uid: str, transfer_syntax_uid: str | None = None) -> str:
    """Why an instance was not sent: the PACS took no context for its SOP class.

    With ``transfer_syntax_uid``: the PACS takes the class, but not in that syntax.
    Names and UIDs only, never the peer's words or patient data.
    """
    name = uid_name(sop_class_uid)
    if transfer_syntax_uid is None:
        return (
            f"the PACS does not accept {name}; set fallback or ask the PACS administrator "
            f"to accept {sop_class_uid}"
        )
    return (
        f"the PACS does not accept {name} in {uid_name(transfer_syntax_uid)}; ask the PACS "
        f"administrator to accept {sop_class_uid} in {transfer_syntax_uid}"
    )


def no_substitute_reason(sop_class_uid: str) -> str:
    """Why a refused class stays refused under ``fallback = "compatible"``."""
    return (
        f'{not_accepted_reason(sop_class_uid)} (fallback = "compatible": no other class '
        "carries it losslessly)"
    )


def substitute_refused_reason(sop_class_uid: str, substitute: str) -> str:
    """Why a refused class stays refused: its compatible class is refused too."""
    return (
        f'{not_accepted_reason(sop_class_uid)} (fallback = "compatible": it does not '
        f"accept {uid_name(substitute)} {substitute} either)"
    )
