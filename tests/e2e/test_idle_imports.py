"""An idle ``dermgate run`` loads only what its configuration uses (issue 16, goal 5).

Each test starts the real service entry point (``gateway.cli.main(["run", ...])``) in a
fresh interpreter; when the service logs ``running as`` — every configured stage has
started — a logging handler writes the names in ``sys.modules`` to a file and stops
the service with SIGTERM, as systemd would. The page's aiohttp and prometheus-client
come only with ``[web]``, aiomqtt only with ``[mqtt]``; numpy never (pydicom would load
it if it could), Pillow only when a capture needs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway.demo.local_orthanc import free_port

# Started as `dermgate run` is; stops itself once running, after noting its modules.
# It also notes whether the garbage collector was paused through the start-up and
# runs again once the gateway runs (the first callback after the `running as` step).
_PROBE = """
import asyncio, gc, json, logging, os, signal, sys
modules_file = sys.argv[1]

class Probe(logging.Handler):
    def emit(self, record):
        if " running as " in record.getMessage():
            modules = sorted(sys.modules)
            paused = not gc.isenabled()

            def after_start():
                with open(modules_file, "w") as out:
                    json.dump({"modules": modules, "gc_paused_at_start": paused,
                               "gc_on_when_running": gc.isenabled()}, out)
                os.kill(os.getpid(), signal.SIGTERM)

            asyncio.get_running_loop().call_soon(after_start)

logging.getLogger("gateway.service.app").addHandler(Probe())
from gateway.cli import main
sys.exit(main(["run", "--config", sys.argv[2]]))
"""

_OPTIONAL = ("aiohttp", "aiomqtt", "prometheus_client", "numpy", "PIL")


def _config(tmp_path: Path, extra: str = "") -> Path:
    photos = tmp_path / "photos"
    photos.mkdir()
    path = tmp_path / "dermgate.toml"
    path.write_text(
        f"""
[gateway]
id = "idle-box"
ae_title = "DERMGATE"
listen_port = {free_port()}
state_dir = "{tmp_path / "state"}"

[[destinations]]
name = "pacs"
kind = "dicom"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = {free_port()}
storage_commitment = false

[[devices]]
name = "dermatoscope"
driver = "serial-dermatoscope"
port = "{tmp_path / "ttyDERM0"}"

[[devices]]
name = "camera"
driver = "photo-folder"
folder = "{photos}"
{extra}""",
        encoding="utf-8",
    )
    return path


def _modules_at_start(tmp_path: Path, config: Path) -> set[str]:
    return set(_probe(tmp_path, config)["modules"])


def _probe(tmp_path: Path, config: Path) -> dict[str, Any]:
    modules_file = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(modules_file), str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert modules_file.exists(), done.stderr[-3000:]
    found: dict[str, Any] = json.loads(modules_file.read_text(encoding="utf-8"))
    return found


def _top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_a_box_without_web_or_mqtt_starts_without_their_libraries_numpy_or_pillow(
    tmp_path: Path,
) -> None:
    loaded = _top_level(_modules_at_start(tmp_path, _config(tmp_path)))
    assert "gateway" in loaded
    assert "pynetdicom" in loaded  # the destination's sender is there
    assert loaded.isdisjoint(_OPTIONAL), sorted(loaded & set(_OPTIONAL))


def test_web_and_mqtt_bring_their_libraries_and_still_no_numpy(tmp_path: Path) -> None:
    web_and_mqtt = f"""
[web]
listen = "127.0.0.1:{free_port()}"

[mqtt]
host = "127.0.0.1"
port = {free_port()}
"""
    loaded = _top_level(_modules_at_start(tmp_path, _config(tmp_path, web_and_mqtt)))
    assert {"aiohttp", "prometheus_client", "aiomqtt"} <= loaded
    assert "numpy" not in loaded


def test_run_imports_no_other_command_and_collects_garbage_once_running(
    tmp_path: Path,
) -> None:
    found = _probe(tmp_path, _config(tmp_path))
    other_commands = {
        "gateway.cli.backup",
        "gateway.cli.check",
        "gateway.cli.echo",
        "gateway.cli.spool",
        "gateway.cli.tokens",
        "gateway.cli.worklist",
        "gateway.conformance.command",
    }
    assert other_commands.isdisjoint(found["modules"]), sorted(
        other_commands & set(found["modules"])
    )
    assert found["gc_paused_at_start"] is True  # no collections while importing
    assert found["gc_on_when_running"] is True  # and the collector runs for the service
