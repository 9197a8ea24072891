"""The CID 4029 copy in gateway.dicom.codes is pydicom's CID 4029, concept for concept."""

from __future__ import annotations

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code as PydicomCode

from gateway.context.sites import all_sites, site
from gateway.dicom.codes import CID4029, Code
from gateway.dicom.modules import code_item, dermatology_site


def test_the_copy_holds_every_concept_of_pydicoms_cid_4029_and_nothing_else() -> None:
    theirs = {
        (c.scheme_designator, c.value, str(c.meaning)) for c in codes.CID4029.concepts.values()
    }
    ours = {(c.scheme_designator, c.value, c.meaning) for c in CID4029}
    assert ours == theirs
    assert len(CID4029) == len(theirs) == 207


def test_our_code_equals_pydicoms_code_of_the_same_concept() -> None:
    ours = Code("39937001", "SCT", "Skin")
    theirs = PydicomCode("39937001", "SCT", "Skin")
    assert ours == theirs
    assert code_item(ours) == code_item(theirs)


def test_sites_and_anatomic_regions_are_found_from_the_copy() -> None:
    found = dermatology_site("66643007")  # skin of ... (a SNOMED CT site of the CID)
    assert found is not None
    assert found.scheme_designator == "SCT"
    assert len(all_sites()) == 207
    by_ref = site("SCT:66643007")
    assert by_ref is not None
    assert by_ref.meaning == found.meaning
