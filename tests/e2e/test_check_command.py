"""``dermgate check``: one line per check with what to do, exit 0 when nothing fails.

Against real peers: a running Orthanc (and one stopped), Orthanc and pynetdicom SCPs
that reject the association (each A-ASSOCIATE-RJ reason names the wrong AE title),
a port that takes the connection and never answers, Orthanc's worklist plugin, a
Mosquitto broker; a missing drop folder and a state folder the service cannot write.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from gateway.demo.local_orthanc import OrthancProcess, free_port
from gateway.dicom import network  # noqa: F401  (pynetdicom closes refused sockets)
from tests.support.dicomweb import DicomwebOrthanc, dicomweb_config
from tests.support.gateway_process import GatewayProcess
from tests.support.mqtt import Mosquitto
from tests.support.worklist import Item, WorklistServer, write_items

OUR_AE = "DERMGATE"


def write_config(tmp_path: Path, *sections: str) -> Path:
    """A configuration with a state folder under ``tmp_path`` and ``sections``."""
    state = tmp_path / "state"
    text = (
        f'[gateway]\nid = "check-box"\nae_title = "{OUR_AE}"\nstate_dir = "{state}"\n'
        f"listen_port = {free_port()}\n"
    )
    path = tmp_path / "dermgate.toml"
    path.write_text(text + "\n".join(sections), encoding="utf-8")
    return path


def destination(port: int, ae_title: str = "ORTHANC", *, commitment: bool = False) -> str:
    """A ``[[destinations]]`` section ``pacs`` on loopback."""
    return (
        f'\n[[destinations]]\nname = "pacs"\nkind = "dicom"\nae_title = "{ae_title}"\n'
        f'host = "127.0.0.1"\nport = {port}\nstorage_commitment = {str(commitment).lower()}\n'
    )


def check(config: Path, *extra: str, command: str = "check") -> subprocess.CompletedProcess[str]:
    """Run ``dermgate check --config CONFIG EXTRA...`` (or ``check-config CONFIG``)."""
    args = ["--config", str(config)] if command == "check" else [str(config)]
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", command, *args, *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def line(output: str, start: str) -> str:
    """The one output line whose check name starts with ``start``."""
    found = [ln for ln in output.splitlines() if ln[6:].startswith(start)]
    assert len(found) == 1, output
    return found[0]


@pytest.fixture
def echo_scp() -> Iterator[Any]:
    """Start pynetdicom Verification SCPs: ``start(ae_title, **settings) -> port``."""
    servers: list[Any] = []

    def start(ae_title: str, **settings: Any) -> int:
        ae = AE(ae_title=ae_title)
        ae.add_supported_context(Verification)
        for key, value in settings.items():
            setattr(ae, key, value)
        port = free_port()
        servers.append(ae.start_server(("127.0.0.1", port), block=False))
        return port

    yield start
    for server in servers:
        server.shutdown()


def test_a_running_box_with_its_orthanc_and_broker_passes_and_json_has_the_same_lines(
    tmp_path: Path,
    orthanc: OrthancProcess,
    mosquitto: Mosquitto,
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    config = write_config(
        tmp_path,
        destination(orthanc.dicom_port, commitment=True),
        f'\n[[devices]]\ndriver = "photo-folder"\nname = "camera"\nfolder = "{photos}"\n',
        "\n" + mosquitto.config_section(),
    )
    gateway = gateway_factory(config)
    gateway.wait_running()
    done = check(config, "--connect")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert line(out, "Configuration").startswith("OK    ")
    assert line(out, "PACS pacs").startswith("OK    "), out
    assert "Answers a DICOM echo" in line(out, "PACS pacs")
    assert line(out, "MQTT broker").startswith("OK    ")
    assert line(out, "Device camera").startswith("OK    ")
    assert line(out, "Commitment listener").startswith("OK    ")
    assert line(out, "State folder").startswith("OK    ")
    assert out.rstrip().endswith("0 failed")

    as_json = check(config, "--connect", "--json")
    assert as_json.returncode == 0, as_json.stderr
    items = json.loads(as_json.stdout)
    assert isinstance(items, list)
    assert all(set(item) == {"name", "status", "finding", "advice"} for item in items)
    assert {item["status"] for item in items} <= {"ok", "warn", "fail"}
    assert len(items) == len(out.splitlines()) - 1  # the text adds only its summary
    (pacs,) = [item for item in items if item["name"].startswith("PACS pacs")]
    assert pacs["status"] == "ok"
    assert f"ORTHANC at 127.0.0.1:{orthanc.dicom_port}" in pacs["name"]
    assert gateway.stop() == 0
    done = check(config, "--connect")  # the service stopped: its listener is missed
    assert done.returncode == 1
    assert "Check that the DermGate service runs" in line(done.stdout, "Commitment listener")


def test_a_stopped_orthanc_is_a_refused_connection(tmp_path: Path, orthanc: OrthancProcess) -> None:
    config = write_config(tmp_path, destination(orthanc.dicom_port))
    assert check(config, "--connect").returncode == 0
    orthanc.stop()
    done = check(config, "--connect")
    assert done.returncode == 1, done.stdout
    pacs = line(done.stdout, "PACS pacs")
    assert pacs.startswith("FAIL  ")
    assert "Connection refused" in pacs
    assert "Check that the PACS service is running" in pacs
    assert check(config).returncode == 0, "without --connect the PACS is not asked"


def test_orthanc_rejecting_its_called_ae_title_says_our_config_names_it_wrong(
    tmp_path: Path,
) -> None:
    server = OrthancProcess(tmp_path / "orthanc", extra={"DicomCheckCalledAet": True})
    server.start()
    try:
        config = write_config(tmp_path, destination(server.dicom_port, ae_title="NOTORTHANC"))
        done = check(config, "--connect")
    finally:
        server.stop()
    assert done.returncode == 1
    pacs = line(done.stdout, "PACS pacs")
    assert pacs.startswith("FAIL  ")
    assert "does not answer to the AE title NOTORTHANC" in pacs
    assert "called AE title not recognised" in pacs
    assert '"pacs" ae_title' in pacs


@pytest.mark.parametrize("which", ["calling", "called"])
def test_a_pynetdicom_scp_rejecting_an_ae_title_names_which_one(
    tmp_path: Path, echo_scp: Any, which: str
) -> None:
    if which == "calling":  # the PACS knows only another box
        port = echo_scp("PACS", require_calling_aet=["OTHERBOX"])
        config = write_config(tmp_path, destination(port, ae_title="PACS"))
    else:  # the PACS checks the AE title we call it by
        port = echo_scp("PACS", require_called_aet=True)
        config = write_config(tmp_path, destination(port, ae_title="PACSTYPO"))
    done = check(config, "--connect", "--json")
    assert done.returncode == 1
    (pacs,) = [i for i in json.loads(done.stdout) if i["name"].startswith("PACS pacs")]
    assert pacs["status"] == "fail"
    if which == "calling":
        assert f"does not know this box's AE title {OUR_AE}" in pacs["finding"]
        assert f"add the AE title {OUR_AE}" in pacs["advice"]
        assert "[gateway] ae_title" in pacs["advice"]
    else:
        assert "does not answer to the AE title PACSTYPO" in pacs["finding"]
        assert '"pacs" ae_title' in pacs["advice"]


def test_a_peer_that_takes_the_connection_and_never_answers(tmp_path: Path) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes connections; nobody ever reads
        config = write_config(tmp_path, destination(silent.getsockname()[1]))
        done = check(config, "--connect")
    assert done.returncode == 1
    pacs = line(done.stdout, "PACS pacs")
    assert pacs.startswith("FAIL  ")
    assert "No answer" in pacs
    assert "association request is not answered within 5 s" in pacs


def test_worklist_scp_is_echoed_and_no_patient_data_is_printed(
    tmp_path: Path, wlmscpfs_mwl: WorklistServer, orthanc: OrthancProcess
) -> None:
    write_items(
        wlmscpfs_mwl.folder,
        [Item("Zyxwort^Quilla", "MRN-4711", "1.2.826.0.1.3680043.2.1125.77", "SPS1", "20261206",
              accession="ACC-0815", birth_date="19700101")],
    )  # fmt: skip
    config = write_config(tmp_path, destination(orthanc.dicom_port), "\n" + wlmscpfs_mwl.toml())
    done = check(config, "--connect")
    assert done.returncode == 0, done.stdout
    assert line(done.stdout, "Worklist SCP").startswith("OK    ")
    for secret in ("Zyxwort", "Quilla", "MRN-4711", "ACC-0815", "19700101"):
        assert secret not in done.stdout + done.stderr

    right = config.read_text()
    config.write_text(right.replace(f'ae_title = "{wlmscpfs_mwl.ae_title}"', 'ae_title = "RIS"'))
    done = check(config, "--connect")
    assert done.returncode == 1
    worklist = line(done.stdout, "Worklist SCP")
    assert worklist.startswith("FAIL  ")
    assert "does not answer to the AE title RIS" in worklist
    assert "[worklist] ae_title" in worklist

    config.write_text(right)
    wlmscpfs_mwl.stop.stop()
    done = check(config, "--connect")
    assert done.returncode == 1
    worklist = line(done.stdout, "Worklist SCP")
    assert worklist.startswith("FAIL  ")
    assert "Connection refused" in worklist
    assert "cached list is used" in worklist


def test_a_stopped_broker_fails_and_says_captures_are_not_affected(
    tmp_path: Path, orthanc: OrthancProcess, mosquitto: Mosquitto
) -> None:
    config = write_config(
        tmp_path, destination(orthanc.dicom_port), "\n" + mosquitto.config_section()
    )
    mosquitto.stop()
    done = check(config, "--connect")
    assert done.returncode == 1
    broker = line(done.stdout, "MQTT broker")
    assert broker.startswith("FAIL  ")
    assert "captures are not affected" in broker
    assert "Check that the broker is running" in broker


def test_a_missing_drop_folder_is_a_warning_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "photos"
    config = write_config(
        tmp_path,
        destination(free_port()),
        f'\n[[devices]]\ndriver = "photo-folder"\nname = "camera"\nfolder = "{missing}"\n',
        '\n[[devices]]\ndriver = "serial-dermatoscope"\nname = "scope"\n'
        'port = "/dev/ttyDERMGATE-ABSENT"\n',
    )
    for done in (check(config), check(config, command="check-config")):
        assert done.returncode == 0, done.stdout + done.stderr
        camera = line(done.stdout, "Device camera")
        assert camera.startswith("WARN  ")
        assert str(missing) in camera
        assert f"mkdir -p {missing}" in camera
        scope = line(done.stdout, "Device scope")
        assert scope.startswith("WARN  ")
        assert "unplugged" in scope


def test_a_state_folder_the_service_cannot_write_fails(tmp_path: Path) -> None:
    config = write_config(tmp_path, destination(free_port()))
    state = tmp_path / "state"
    state.mkdir()
    (state / "spool").write_text("a file where the spool folder belongs\n")
    done = check(config)
    assert done.returncode == 1, done.stdout
    folder = line(done.stdout, "State folder")
    assert folder.startswith("FAIL  ")
    assert "is not a folder" in folder
    # check-config shows the same line, but must not keep the service from starting
    again = check(config, command="check-config")
    assert again.returncode == 0
    assert line(again.stdout, "State folder") == folder
    # The state folder itself a file: the configuration cannot be used at all.
    (state / "spool").unlink()
    state.rmdir()
    state.write_text("not a folder\n")
    for done in (check(config, "--connect"), check(config, command="check-config")):
        assert done.returncode == 2
        assert "gateway.state_dir" in done.stderr
        assert "Traceback" not in done.stderr


def test_bad_usage_and_the_version(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    done = check(tmp_path / "absent.toml")
    assert done.returncode == 2
    assert "cannot read" in done.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.returncode == 0
    assert shown.stdout.strip() == f"dermgate {version('dermgate')}"


def test_a_dicomweb_store_is_queried_with_its_credentials(
    tmp_path: Path, dicomweb_orthanc_factory: Callable[..., DicomwebOrthanc]
) -> None:
    password, wrong = "s3cret-Pa55word", "not-the-Pa55word"
    store = dicomweb_orthanc_factory(users={"dermgate": password})
    password_file = tmp_path / "password"
    password_file.write_text(password + "\n", encoding="utf-8")
    config = dicomweb_config(
        tmp_path,
        store.dicomweb_url,
        destination=f'auth = "basic"\nusername = "dermgate"\npassword_file = "{password_file}"',
        devices="",
    )
    done = check(config, "--connect")
    assert done.returncode == 0, done.stdout
    assert line(done.stdout, "DICOMweb store cloud").startswith("OK    ")
    password_file.write_text(wrong + "\n", encoding="utf-8")
    done = check(config, "--connect")
    assert done.returncode == 1
    store_line = line(done.stdout, "DICOMweb store cloud")
    assert store_line.startswith("FAIL  ")
    assert "refused the gateway's credentials" in store_line
    for secret in (password, wrong):
        assert secret not in done.stdout + done.stderr
