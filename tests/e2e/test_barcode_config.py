"""``[[barcodes]]`` in the configuration: ``dermgate check-config`` names what is wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BASE = """
[gateway]
id = "derm-box-01"
state_dir = "/var/lib/dermgate"

[[destinations]]
name = "pacs"
kind = "dicom"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = 4242

[[devices]]
driver = "serial-dermatoscope"
name = "dermatoscope"
port = "/dev/ttyACM0"

[[devices]]
driver = "scanner-export"
name = "scanner3d"
folder = "/srv/export"
"""


def check(tmp_path: Path, barcodes: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "dermgate.toml"
    path.write_text(BASE + barcodes, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_wedge_and_a_serial_scanner_are_accepted(tmp_path: Path) -> None:
    result = check(
        tmp_path,
        """
[[barcodes]]
device = "/dev/input/by-id/usb-Honeywell_Scanner-event-kbd"
for_device = "dermatoscope"
pattern = '^(?P<patient_id>\\d{6,10})$'

[[barcodes]]
port = "/dev/ttyACM1"
baudrate = 115200
for_device = "scanner3d"
pattern = '^ACC(?P<accession_number>[0-9]{8})$'
""",
    )
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            'device = "/dev/input/by-id/x-event-kbd"\nport = "/dev/ttyACM1"',
            "barcodes[0]: give exactly one of device (keyboard wedge) or port (serial)",
        ),
        ("", "barcodes[0]: give exactly one of device (keyboard wedge) or port (serial)"),
        (
            "port = \"/dev/ttyACM1\"\npattern = '^(?P<patient_id>\\d+$'",
            "barcodes[0].pattern: not a regular expression: missing ), unterminated subpattern",
        ),
        (
            "port = \"/dev/ttyACM1\"\npattern = '^(\\d+)$'",
            "barcodes[0].pattern: the pattern needs a named group patient_id or accession_number",
        ),
        (
            "port = \"/dev/ttyACM1\"\npattern = '^(?P<patientid>\\d+)$'",
            "barcodes[0].pattern: the pattern needs a named group patient_id or accession_number",
        ),
        (
            'port = "/dev/ttyACM1"\nbaud = 9600',
            "barcodes[0].baud: unknown key",
        ),
    ],
)
def test_a_bad_scanner_entry_is_named(tmp_path: Path, entry: str, expected: str) -> None:
    result = check(tmp_path, f'\n[[barcodes]]\nfor_device = "dermatoscope"\n{entry}\n')
    assert result.returncode == 2
    assert expected in result.stderr, result.stderr


def test_for_device_must_name_a_configured_device(tmp_path: Path) -> None:
    result = check(
        tmp_path,
        """
[[barcodes]]
port = "/dev/ttyACM1"
for_device = "dermatoscope"

[[barcodes]]
port = "/dev/ttyACM2"
for_device = "confocal"
""",
    )
    assert result.returncode == 2
    assert (
        "barcodes[1].for_device: 'confocal' names no [[devices]] entry "
        "(their names: dermatoscope, scanner3d)"
    ) in result.stderr, result.stderr


def test_one_scanner_cannot_serve_two_entries(tmp_path: Path) -> None:
    entry = '\n[[barcodes]]\nport = "/dev/ttyACM1"\nfor_device = "{}"\n'
    result = check(tmp_path, entry.format("dermatoscope") + entry.format("scanner3d"))
    assert result.returncode == 2
    assert "barcodes[1]: /dev/ttyACM1 is already barcodes[0]" in result.stderr, result.stderr


def test_for_device_is_required(tmp_path: Path) -> None:
    result = check(tmp_path, '\n[[barcodes]]\nport = "/dev/ttyACM1"\n')
    assert result.returncode == 2
    assert "barcodes[0].for_device" in result.stderr, result.stderr
