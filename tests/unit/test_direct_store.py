"""The direct C-STORE path reads what pynetdicom would read, or leaves it to pynetdicom.

``gateway.forward.direct_store`` takes a file's meta group from its raw bytes and a
C-STORE-RSP's status from the command set's bytes instead of pydicom data sets. A
wrong offset would send a broken object and a wrong status a wrong verdict, so
each is checked here against pynetdicom's own reading of the same bytes; the whole
path against real SCPs is in ``tests/e2e/test_cstore.py`` and
``tests/e2e/test_cstore_pdus.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom.dimse_messages import C_ECHO_RSP, C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import split_dataset

from gateway.core.uids import new_uid
from gateway.forward.direct_store import read_meta, store_status
from tests.support.dicom_files import make_dicom

_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.4"  # VL Photographic Image Storage


def _written(path: Path, *, meta_extra: dict[str, object] | None = None) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _SOP_CLASS
    meta.MediaStorageSOPInstanceUID = "1.2.3.4.5"  # odd length: padded with a NUL
    meta.TransferSyntaxUID = ImplicitVRLittleEndian
    for keyword, value in (meta_extra or {}).items():
        setattr(meta, keyword, value)
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = "X"
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def _agrees_with_pynetdicom(path: Path) -> None:
    meta = read_meta(path)
    assert meta is not None
    theirs, offset = split_dataset(path)
    assert meta.offset == offset
    assert meta.sop_class_uid == theirs.MediaStorageSOPClassUID
    assert meta.sop_instance_uid == theirs.MediaStorageSOPInstanceUID
    assert meta.transfer_syntax_uid == theirs.TransferSyntaxUID


def test_the_gateways_own_files_are_read_as_pynetdicom_reads_them(tmp_path: Path) -> None:
    path, _ = make_dicom(tmp_path, seed=3)
    _agrees_with_pynetdicom(path)


def test_odd_length_uids_and_extra_meta_elements_are_read_alike(tmp_path: Path) -> None:
    path = _written(
        tmp_path / "a.dcm",
        meta_extra={"ImplementationVersionName": "OTHER_1", "SourceApplicationEntityTitle": "X"},
    )
    _agrees_with_pynetdicom(path)


def test_what_it_cannot_read_is_left_to_pynetdicom(tmp_path: Path) -> None:
    no_preamble = tmp_path / "raw.dcm"
    no_preamble.write_bytes(b"\0" * 200)
    assert read_meta(no_preamble) is None
    # A meta group longer than the bytes looked at: pynetdicom reads it.
    big = _written(
        tmp_path / "big.dcm",
        meta_extra={"PrivateInformationCreatorUID": "1.2.3", "PrivateInformation": b"\1" * 8000},
    )
    assert read_meta(big) is None


def _command_set(message: DIMSEMessage) -> bytes:
    encoded = b""
    for pdata in message.encode_msg(1, 16382):
        for _, value in pdata.presentation_data_value_list:
            if value[0] & 0x01:  # a command fragment
                encoded += value[1:]
    return encoded


@pytest.mark.parametrize("status", [0x0000, 0xB000, 0xA700, 0xC000, 0x0122])
def test_a_c_store_response_gives_the_status_pynetdicom_decodes(status: int) -> None:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 1
    primitive.AffectedSOPClassUID = _SOP_CLASS
    primitive.AffectedSOPInstanceUID = new_uid()
    primitive.Status = status
    if status >= 0xA000:
        primitive.ErrorComment = "out of space"
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    assert store_status(_command_set(message)) == status


def test_any_other_message_is_left_to_pynetdicom() -> None:
    echo = C_ECHO()
    echo.MessageIDBeingRespondedTo = 1
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    echo.Status = 0
    message = C_ECHO_RSP()
    message.primitive_to_message(echo)
    assert store_status(_command_set(message)) is None
    assert store_status(b"\x00\x00\x00") is None  # truncated
