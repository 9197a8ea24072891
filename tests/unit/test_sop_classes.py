"""The SOP classes DermGate proposes are exactly the ones it writes."""

from __future__ import annotations

from gateway.dicom.context import CONTEXT_SOP_CLASSES
from gateway.dicom.sop_classes import WRITTEN, uid_name
from gateway.forward.cstore import not_accepted_reason


def test_every_written_class_is_proposed_once() -> None:
    classes = [cls for cls, _ in WRITTEN]
    assert len(classes) == len(set(classes))
    assert set(classes) == CONTEXT_SOP_CLASSES
    assert all(syntaxes for _, syntaxes in WRITTEN)


def test_the_reason_names_the_class_and_its_uid() -> None:
    assert not_accepted_reason("1.2.840.10008.5.1.4.1.1.104.3") == (
        "the PACS does not accept Encapsulated STL Storage; set fallback or ask the PACS "
        "administrator to accept 1.2.840.10008.5.1.4.1.1.104.3"
    )
    assert uid_name("1.2.3.4") == "1.2.3.4", "an unknown UID is shown as itself"
