"""Configuration: the contract keys, clear errors naming the key, no half-started service."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.core.config import ConfigError, default_gateway_id
from gateway.service.config import load_config
from tests.support.paths import REPO_ROOT

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
    destination = CONTRACT[CONTRACT.index("[[destinations]]") : CONTRACT.index("[[devices]]")]
    config = load_config(write(tmp_path, destination), service=True)
    assert config.gateway.ae_title == "DERMGATE"
    assert config.gateway.state_dir == Path("/var/lib/dermgate")
    assert config.gateway.id == default_gateway_id() == default_gateway_id()
    assert all(ch.isalnum() or ch == "-" for ch in config.gateway.id)


def test_the_shipped_example_config_is_valid() -> None:
    example = REPO_ROOT / "image" / "dermgate.toml.example"
    result = dermgate("check-config", str(example))
    assert result.returncode == 0, result.stderr


def test_supervision_and_hotplug_sections(tmp_path: Path) -> None:
    from gateway.service.app import restart_policy

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


def _without_destination(text: str) -> str:
    head, _, rest = text.partition("[[destinations]]")
    return head + rest[rest.index("[[devices]]") :]


def _state_dir(value: str) -> Callable[[str, Path], str]:
    return lambda text, _tmp: text.replace('state_dir = "STATE"', f"state_dir = {value}")


def _state_dir_is_a_file(text: str, tmp: Path) -> str:
    (tmp / "state-file").write_text("not a folder\n", encoding="utf-8")
    return text.replace('"STATE"', f'"{tmp / "state-file"}"')


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(lambda _text, _tmp: "", "destinations", id="empty-file"),
        pytest.param(lambda _t, _tmp: "# nothing yet\n\n", "destinations", id="only-comments"),
        pytest.param(lambda t, _tmp: _without_destination(t), "destinations", id="no-destination"),
        pytest.param(
            lambda t, _tmp: t.replace("port = 4242", "port = true"),
            "destinations[0].port",
            id="port-true",
        ),
        pytest.param(
            lambda t, _tmp: t.replace("listen_port = 11113", "listen_port = true"),
            "gateway.listen_port",
            id="listen-port-true",
        ),
        pytest.param(
            lambda t, _tmp: t.replace("port = 4242", 'port = "4242"'),
            "destinations[0].port",
            id="port-quoted",
        ),
        pytest.param(
            lambda t, _tmp: t.replace("port = 4242", "port = 4242\nbatch_size = 20.0"),
            "destinations[0].batch_size",
            id="count-decimal",
        ),
        pytest.param(
            lambda t, _tmp: t.replace("port = 4242", "port = 4242\nconnect_timeout = inf"),
            "destinations[0].connect_timeout",
            id="timeout-inf",
        ),
        pytest.param(
            lambda t, _tmp: t.replace("port = 4242", "port = 4242\ndimse_timeout = nan"),
            "destinations[0].dimse_timeout",
            id="timeout-nan",
        ),
        pytest.param(
            lambda t, _tmp: t.replace("port = 4242", "port = 4242\nnetwork_timeout = true"),
            "destinations[0].network_timeout",
            id="timeout-true",
        ),
        pytest.param(
            lambda t, _tmp: t + "\n[supervision]\nhang_timeout = inf\n",
            "supervision.hang_timeout",
            id="supervision-inf",
        ),
        pytest.param(
            lambda t, _tmp: t + "\n[spool]\nkeep_days = -inf\n",
            "spool.keep_days",
            id="spool-minus-inf",
        ),
        pytest.param(
            lambda t, _tmp: t.replace('"/dev/ttyACM0"', '"/dev/ttyACM0"\nstall_timeout = inf'),
            "devices[0].stall_timeout",
            id="device-option-inf",
        ),
        pytest.param(
            lambda t, _tmp: t.replace('"/dev/ttyACM0"', '"/dev/ttyACM0"\nbaudrate = true'),
            "devices[0].baudrate",
            id="device-option-true",
        ),
        pytest.param(_state_dir('""'), "gateway.state_dir", id="state-dir-empty"),
        pytest.param(
            _state_dir('"var/lib/dermgate"'), "gateway.state_dir", id="state-dir-relative"
        ),
        pytest.param(_state_dir_is_a_file, "gateway.state_dir", id="state-dir-is-a-file"),
    ],
)
def test_check_config_and_run_refuse_a_careless_config_naming_the_key(
    tmp_path: Path, make: Callable[[str, Path], str], expected: str
) -> None:
    """The real CLI on a real file: exit 2, the key named, no traceback, nothing started."""
    state = tmp_path / "state"
    text = make(CONTRACT.replace('"/var/lib/dermgate"', '"STATE"'), tmp_path)
    path = write(tmp_path, text.replace('"STATE"', f'"{state}"'))
    checked = dermgate("check-config", str(path))
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert f"{path}: {expected}" in checked.stderr
    assert "Traceback" not in checked.stdout + checked.stderr
    ran = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=30,
    )
    assert ran.returncode == 2, ran.stderr
    assert f"{path}: {expected}" in ran.stderr
    assert "Traceback" not in ran.stdout + ran.stderr
    assert not state.exists(), "nothing may be created by a refused configuration"
    assert not (tmp_path / "var").exists()
