"""Configuration: the contract keys, clear errors naming the key, no half-started service."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, default_gateway_id, load_config

CONTRACT = """
[gateway]
id = "derm-box-01"
ae_title = "DERMGATE"
listen_port = 11113
state_dir = "/var/lib/dermgate"

[[destinations]]
name = "pacs"
kind = "dicom"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = 4242
storage_commitment = true

[[devices]]
driver = "serial-dermatoscope"
port = "/dev/ttyACM0"
"""


def dermgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, check=False
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dermgate.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_contract_config_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, CONTRACT)
    config = load_config(path)
    assert config.gateway.id == "derm-box-01"
    assert config.gateway.listen_port == 11113
    assert config.destinations[0].storage_commitment is True
    assert config.devices[0].options() == {"port": "/dev/ttyACM0"}
    result = dermgate("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("listen_port = 11113", "listen_port = 11113\nlisten_prot = 1"),
            "gateway.listen_prot: unknown key",
        ),
        (('id = "derm-box-01"', 'id = "derm box/01"'), "gateway.id"),
        (("port = 4242", "port = 70000"), "destinations[0].port"),
        (('kind = "dicom"', 'kind = "ftp"'), "destinations[0].kind"),
        (
            ('ae_title = "ORTHANC"', 'ae_title = "THIS-AE-TITLE-IS-TOO-LONG"'),
            "destinations[0].ae_title",
        ),
        (
            ('port = "/dev/ttyACM0"', 'port = "/dev/ttyACM0"\nbaud = 9600'),
            "devices[0].baud: unknown key for driver serial-dermatoscope",
        ),
        (
            ('driver = "serial-dermatoscope"', 'driver = "no-such-driver"'),
            "unknown driver 'no-such-driver'",
        ),
        (('port = "/dev/ttyACM0"', ""), "devices[0].port"),
    ],
)
def test_bad_config_names_the_key_and_the_file(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    path = write(tmp_path, CONTRACT.replace(*change, 1))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert any(expected in p and str(path) in p for p in caught.value.problems), (
        caught.value.problems
    )
    result = dermgate("check-config", str(path))
    assert result.returncode == 2
    assert expected in result.stderr
    assert str(path) in result.stderr


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = CONTRACT.replace("listen_port = 11113", "listen_port = 0\nbogus = 1")
    result = dermgate("check-config", str(write(tmp_path, text)))
    assert result.returncode == 2
    assert "gateway.listen_port" in result.stderr
    assert "gateway.bogus: unknown key" in result.stderr


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    result = dermgate("check-config", str(write(tmp_path, "[gateway\nid=")))
    assert result.returncode == 2
    assert "not valid TOML" in result.stderr
    result = dermgate("check-config", str(tmp_path / "absent.toml"))
    assert result.returncode == 2
    assert "cannot read" in result.stderr


def test_run_refuses_a_bad_config_without_starting(tmp_path: Path) -> None:
    state = tmp_path / "state"
    text = CONTRACT.replace('"/var/lib/dermgate"', f'"{state}"').replace("port = 4242", "port = -1")
    result = dermgate("run", "--config", str(write(tmp_path, text)))
    assert result.returncode == 2
    assert "destinations[0].port" in result.stderr
    assert not state.exists(), "nothing may be created by a half-configured service"


def test_defaults_suit_a_real_box(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config.gateway.ae_title == "DERMGATE"
    assert config.gateway.state_dir == Path("/var/lib/dermgate")
    assert config.gateway.id == default_gateway_id() == default_gateway_id()
    assert all(ch.isalnum() or ch == "-" for ch in config.gateway.id)


def test_the_shipped_example_config_is_valid() -> None:
    example = Path(__file__).parent.parent / "image" / "dermgate.toml.example"
    result = dermgate("check-config", str(example))
    assert result.returncode == 0, result.stderr


def test_supervision_and_hotplug_sections(tmp_path: Path) -> None:
    from gateway.app import restart_policy

    config = load_config(write(tmp_path, CONTRACT))
    assert config.supervision.quarantine_after == 5
    assert config.supervision.quarantine_window == 600.0
    assert config.supervision.hang_timeout == 120.0
    assert config.hotplug.source == "none"
    assert config.status_path() == Path("/var/lib/dermgate/status/devices.json")
    tuned = load_config(
        write(
            tmp_path,
            CONTRACT
            + "\n[supervision]\nrestart_initial = 0.5\nrestart_max = 30\n"
            + "quarantine_after = 3\nquarantine_window = 120\nhang_timeout = 45\n"
            + '\n[hotplug]\nsource = "udev"\n',
        )
    )
    policy = restart_policy(tuned)
    assert (policy.initial, policy.cap, policy.quarantine_after) == (0.5, 30.0, 3)
    assert (policy.quarantine_window, policy.hang_timeout) == (120.0, 45.0)
    assert tuned.hotplug.source == "udev"
    path = write(tmp_path, CONTRACT + "\n[supervision]\nquarantine = 3\n")
    result = dermgate("check-config", str(path))
    assert result.returncode == 2
    assert f"{path}: supervision.quarantine: unknown key" in result.stderr
    path = write(tmp_path, CONTRACT + "\n[supervision]\nrestart_initial = 10\nrestart_max = 1\n")
    result = dermgate("check-config", str(path))
    assert result.returncode == 2
    assert "restart_max must not be smaller than restart_initial" in result.stderr
