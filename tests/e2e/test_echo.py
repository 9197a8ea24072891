"""``dermgate echo``: which of DermGate's SOP classes each destination accepts.

Against real peers: an Orthanc as shipped (refuses the confocal classes), a
pynetdicom SCP that takes Dermoscopic Photography in JPEG Baseline only, and a port
where nothing listens.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gateway.demo.local_orthanc import OrthancProcess, free_port
from gateway.forward.contexts import STORAGE_CONTEXTS
from tests.support.peers import MisbehavingPacs

DERMOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.7"
VL_PHOTO = "1.2.840.10008.5.1.4.1.1.77.1.4"
CONFOCAL = "1.2.840.10008.5.1.4.1.1.77.1.8"
TILED = "1.2.840.10008.5.1.4.1.1.77.1.9"


def write_config(tmp_path: Path, *destinations: tuple[str, str, int]) -> Path:
    """A configuration with one DICOM destination per (name, AE title, port)."""
    text = f'[gateway]\nid = "test-box-01"\nstate_dir = "{tmp_path / "state"}"\n'
    for name, ae_title, port in destinations:
        text += (
            f'\n[[destinations]]\nname = "{name}"\nkind = "dicom"\nae_title = "{ae_title}"\n'
            f'host = "127.0.0.1"\nport = {port}\nconnect_timeout = 3\nacse_timeout = 5\n'
        )
    path = tmp_path / "dermgate.toml"
    path.write_text(text, encoding="utf-8")
    return path


def echo(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``dermgate echo --config CONFIG``."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "echo", "--config", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_lists_per_destination_the_classes_accepted_and_refused(
    tmp_path: Path, shipped_orthanc: OrthancProcess, pacs: MisbehavingPacs
) -> None:
    pacs.start()
    config = write_config(
        tmp_path, ("pacs", "ORTHANC", shipped_orthanc.dicom_port), ("old", "MISBEHAVE", pacs.port)
    )
    done = echo(config)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    orthanc_part, old_part = text.split("\nold (", 1)
    assert orthanc_part.startswith(f"pacs (ORTHANC@127.0.0.1:{shipped_orthanc.dicom_port}): ")
    assert "answers C-ECHO" in orthanc_part
    assert f"accepts  Dermoscopic Photography Image Storage  {DERMOSCOPIC}" in orthanc_part
    assert f"refuses  Confocal Microscopy Image Storage  {CONFOCAL}" in orthanc_part
    assert f"refuses  Confocal Microscopy Tiled Pyramidal Image Storage  {TILED}" in orthanc_part
    assert (
        f"accepts  Dermoscopic Photography Image Storage  {DERMOSCOPIC}  "
        "(not in JPEG Extended (Process 2 and 4))"
    ) in old_part
    assert f"refuses  VL Photographic Image Storage  {VL_PHOTO}" in old_part
    assert f"refuses  Confocal Microscopy Image Storage  {CONFOCAL}" in old_part


def test_json_names_every_class_proposed_once_per_transfer_syntax(
    tmp_path: Path, pacs: MisbehavingPacs
) -> None:
    pacs.start()
    done = echo(write_config(tmp_path, ("old", "MISBEHAVE", pacs.port)), "--json")
    assert done.returncode == 0, done.stderr
    (entry,) = json.loads(done.stdout)["destinations"]
    assert entry["answered"] is True
    assert entry["error"] is None
    assert entry["echo_status"] == 0
    accepted = {(c["uid"], t["uid"]) for c in entry["accepted"] for t in c["transfer_syntaxes"]}
    refused = {(c["uid"], t["uid"]) for c in entry["refused"] for t in c["transfer_syntaxes"]}
    assert accepted == {(DERMOSCOPIC, "1.2.840.10008.1.2.4.50")}
    assert accepted | refused == {
        (cls, ts) for cls, syntaxes in STORAGE_CONTEXTS.items() for ts in syntaxes
    }
    names = {c["uid"]: c["name"] for c in entry["refused"]}
    assert names[CONFOCAL] == "Confocal Microscopy Image Storage"


def test_an_unreachable_destination_exits_1_with_the_reason_and_the_others_are_listed(
    tmp_path: Path, pacs: MisbehavingPacs
) -> None:
    pacs.start()
    dead = free_port()
    config = write_config(tmp_path, ("gone", "NOBODY", dead), ("old", "MISBEHAVE", pacs.port))
    done = echo(config)
    assert done.returncode == 1
    assert f"gone (NOBODY@127.0.0.1:{dead}): NOT REACHED: cannot open a connection" in done.stdout
    assert f"accepts  Dermoscopic Photography Image Storage  {DERMOSCOPIC}" in done.stdout
    as_json_run = echo(config, "--json")
    assert as_json_run.returncode == 1
    assert (
        "dermgate echo: gone: cannot open a connection to the PACS (network, address or port)"
        in as_json_run.stderr
    )
    as_json = json.loads(as_json_run.stdout)["destinations"]
    assert [e["answered"] for e in as_json] == [False, True]
    assert as_json[0]["error"]["code"] == "unreachable"


def test_a_bad_configuration_exits_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, ("pacs", "ORTHANC", 4242))
    config.write_text(
        config.read_text(encoding="utf-8") + 'fallback = "transcode"\n', encoding="utf-8"
    )
    done = echo(config)
    assert done.returncode == 2
    assert "fallback" in done.stderr
    assert done.stdout == ""
