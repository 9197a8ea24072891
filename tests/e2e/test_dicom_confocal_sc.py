"""16-bit confocal stacks as Multi-frame Grayscale Word Secondary Capture (…7.3).

The Confocal Microscopy IODs take 8-bit pixels only, so ``write_confocal`` hands a
16-bit stack to :mod:`gateway.dicom.confocal_sc`. Checked here with the pinned
dciodvfy (which knows this IOD): zero errors, and no warnings beyond the three
known, documented ones (CFM missing from its Modality list, empty Series
Laterality when the side is unknown, DICOMDIR keys left empty for an unknown
patient). Pixels are compared byte for byte with what the device sent.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from gateway.core.capture import Laterality, PatientContext
from gateway.dicom.confocal import ConfocalStack, write_confocal
from gateway.dicom.confocal_sc import SC_WORD_SOP_CLASS, write_confocal_sc
from tests.support.confocal_stacks import EXPLICIT_LE, GATEWAY, frames_of, job_for, make_stack
from tests.support.dciodvfy import dciodvfy_path
from tests.support.equipment import dermgate_item

WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
WHY = (
    "16-bit reflectance confocal stack: the Confocal Microscopy IODs allow 8-bit pixels "
    "only, so it is stored as Multi-frame Grayscale Word Secondary Capture, losslessly"
)
#: The warnings dciodvfy 20260927 gives for these objects, each a documented decision.
KNOWN_WARNINGS = (
    "Unrecognized defined term <CFM> for value 1 of attribute <Modality>",
    "is only permitted to be empty when actually unknown",  # Series Laterality, side unknown
    "Missing attribute or value that would be needed to build DICOMDIR",  # unknown patient
)


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """dciodvfy's errors and its warnings that are not known decisions."""
    result = subprocess.run(
        [str(dciodvfy_path()), str(path)], capture_output=True, text=True, check=False
    )
    lines = (result.stdout + result.stderr).splitlines()
    assert "MultiframeGrayscaleWordSCImage" in lines, "dciodvfy checked it as Word SC"
    errors = [line for line in lines if line.startswith("Error")]
    unknown = [
        line
        for line in lines
        if line.startswith("Warning") and not any(w in line for w in KNOWN_WARNINGS)
    ]
    return errors, unknown


def written(tmp_path: Path, stack: ConfocalStack, **offer: object) -> tuple[Dataset, list[bytes]]:
    frames = frames_of(stack)
    job = job_for(tmp_path, stack, frames, **offer)
    dest = tmp_path / "out.dcm"
    result = write_confocal(job, dest)  # the dispatch the wrapper uses
    assert result.sop_class_uid == WORD_SC
    assert result.transfer_syntax_uid == EXPLICIT_LE
    errors, warnings = dciodvfy(dest)
    assert errors == []
    assert warnings == []
    return pydicom.dcmread(dest), frames


def test_16bit_z_stack_is_a_conformant_word_sc_with_its_depths(tmp_path: Path) -> None:
    stack = make_stack(bits=16, frames=6)
    ds, frames = written(tmp_path, stack)
    assert ds.SOPClassUID == SC_WORD_SOP_CLASS == WORD_SC
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 16, 15, 0)
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert ds["PixelData"].VR == "OW"
    assert ds.PixelData == b"".join(frames), "pixels byte-identical to the device's"
    assert int(ds.NumberOfFrames) == stack.frames
    # one depth (mm below the skin surface) per frame, ordering the frames, and the
    # device's frame time between frames (Cine), as the 8-bit object's Frame Content
    assert list(ds.FrameIncrementPointer) == [0x00182005, 0x00181065]
    assert [float(d) for d in ds.SliceLocationVector] == [d / 1000 for d in stack.depths_um]
    assert len(ds.SliceLocationVector) == int(ds.NumberOfFrames)
    assert [float(t) for t in ds.FrameTimeVector] == [0.0] + [111.0] * (stack.frames - 1)
    assert ds.ActualFrameDuration == 111
    # what we know about the device and the acquisition
    assert ds.Modality == "CFM"
    assert ds.ConversionType == "DI"
    assert ds.Manufacturer == "DermGate Reference Devices"
    assert ds.ManufacturerModelName == "RCM-1 Confocal"
    assert ds.DeviceSerialNumber == "RCM1-0042"
    assert ds.SoftwareVersions == "3.1.0", "the microscope's firmware only"
    dermgate_item(ds, GATEWAY)
    assert ds.AcquisitionDateTime.startswith("20261130101500")
    assert [float(s) for s in ds.PixelSpacing] == [0.0005, 0.0005]
    assert WHY in ds.ImageComments
    assert "Laser 830 nm, objective 30x/0.9 water, numerical aperture 0.9;" in ds.ImageComments
    # SC rules and display: identity rescale, a window over the range the device used
    assert ds.PresentationLUTShape == "IDENTITY"
    assert (float(ds.RescaleIntercept), float(ds.RescaleSlope)) == (0.0, 1.0)
    words = memoryview(b"".join(frames)).cast("H")
    low = float(ds.WindowCenter) - float(ds.WindowWidth) / 2
    high = float(ds.WindowCenter) + float(ds.WindowWidth) / 2
    assert low <= min(words)
    assert max(words) <= high
    assert min(words) - low < 256, "the window hugs the data (to 256)"
    assert high - max(words) < 257
    assert "TrackingUID" not in ds, "not part of the Secondary Capture IOD"


def test_fluorescence_stack_is_said_to_be_fluorescence(tmp_path: Path) -> None:
    ds, _ = written(tmp_path, replace(make_stack(bits=16), confocal_mode="FLUORESCENCE"))
    assert ds.ImageComments.startswith("16-bit fluorescence confocal stack: the Confocal")


def test_16bit_mosaic_frames_are_the_tiles_row_by_row(tmp_path: Path) -> None:
    stack = make_stack("mosaic", bits=16, size=32, grid=3)
    ds, frames = written(tmp_path, stack)
    assert ds.SOPClassUID == WORD_SC
    assert ds.PixelData == b"".join(frames)
    assert ds.FrameIncrementPointer == 0x00182002, "no frame time from the device: no Cine"
    assert "FrameTimeVector" not in ds
    assert list(ds.FrameLabelVector) == [f"r{r}c{c}" for r in (1, 2, 3) for c in (1, 2, 3)]
    assert "3 x 3 tiles" in ds.ImageComments
    assert "row-major" in ds.ImageComments
    assert "SliceLocationVector" not in ds


def test_16bit_mosaic_in_another_order_names_each_frames_tile(tmp_path: Path) -> None:
    """Serpentine order, one tile missing: each frame's label says where it lies."""
    tiles = ((0, 0), (0, 1), (0, 2), (1, 2), (1, 1))
    stack = replace(
        make_stack("mosaic", bits=16, size=8, grid=3),
        tile_rows=2,
        tile_columns=3,
        frames=5,
        tiles=tiles,
    )
    ds, frames = written(tmp_path, stack)
    assert ds.PixelData == b"".join(frames)
    assert list(ds.FrameLabelVector) == ["r1c1", "r1c2", "r1c3", "r2c3", "r2c2"]
    assert "5 tiles on a 2 x 3 grid, in the order the device took them" in ds.ImageComments


@pytest.mark.parametrize(("frames", "rows", "columns"), [(3, 17, 33), (1, 5, 7), (2, 1, 1)])
def test_odd_sizes_round_trip(tmp_path: Path, frames: int, rows: int, columns: int) -> None:
    stack = replace(make_stack(bits=16, frames=frames), rows=rows, columns=columns)
    ds, sent = written(tmp_path, stack)
    assert (ds.Rows, ds.Columns, int(ds.NumberOfFrames)) == (rows, columns, frames)
    assert len(ds.PixelData) == 2 * rows * columns * frames
    size = 2 * rows * columns
    assert [ds.PixelData[i * size : (i + 1) * size] for i in range(frames)] == sent
    if frames == 1:  # 1C "more than one frame": dciodvfy errors if present
        assert "FrameIncrementPointer" not in ds
        assert "SliceLocationVector" not in ds
        assert "FrameTimeVector" not in ds
        assert "One frame, 0 um below the skin surface" in ds.ImageComments


def test_mosaic_tiles_are_timed_when_the_device_says_a_fractional_frame_time(
    tmp_path: Path,
) -> None:
    """Frame Time Vector (DS) keeps 33.5 ms; Actual Frame Duration (IS) cannot, so it
    is left out rather than rounded."""
    stack = replace(make_stack("mosaic", bits=16, size=8, grid=2), frame_ms=33.5)
    ds, _ = written(tmp_path, stack)
    assert list(ds.FrameIncrementPointer) == [0x00182002, 0x00181065]
    assert [float(t) for t in ds.FrameTimeVector] == [0.0, 33.5, 33.5, 33.5]
    assert "ActualFrameDuration" not in ds


def test_patient_side_and_site_go_into_the_object(tmp_path: Path) -> None:
    patient = PatientContext(patient_name="Doe^Jane", patient_id="P-77", sex="F")
    ds, _ = written(
        tmp_path,
        make_stack(bits=16),
        patient=patient,
        laterality=Laterality.LEFT,
        anatomic_site="39937001",
        lesion_id="lesion-3",
    )
    assert (str(ds.PatientName), ds.PatientID, ds.PatientSex) == ("Doe^Jane", "P-77", "F")
    assert ds.ImageLaterality == "L"
    assert "Laterality" not in ds
    assert ds.AnatomicRegionSequence[0].CodeValue == "39937001"


def test_window_follows_the_values_the_device_used(tmp_path: Path) -> None:
    """Data in part of the 16-bit range gets a window over that part, not 0-65535."""
    stack = make_stack(bits=16, frames=2, size=8)
    twelve_bit = b"".join(v.to_bytes(2, "little") for v in range(0x0123, 0x0123 + 64))
    flat = b"\x34\x12" * (stack.frame_bytes // 2)
    job = job_for(tmp_path, stack, [twelve_bit * (stack.frame_bytes // 128), flat])
    write_confocal_sc(job, tmp_path / "out.dcm")
    assert dciodvfy(tmp_path / "out.dcm") == ([], [])
    ds = pydicom.dcmread(tmp_path / "out.dcm")
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (0x0A00, 0x1200)  # 0x0100-0x12FF
    flat_job = job_for(tmp_path, stack, [flat, flat])
    write_confocal_sc(flat_job, tmp_path / "flat.dcm")
    ds = pydicom.dcmread(tmp_path / "flat.dcm")
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (0x1280, 256)
