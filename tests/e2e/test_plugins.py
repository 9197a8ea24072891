"""Third-party driver plugins: found by entry point, validated, broken ones contained.

The test plugins (tests/plugins/dermgate-testdriver, installed by
``scripts/setup.sh --test``) are a separate distribution, registered in the
``dermgate.drivers`` group exactly like a vendor's package. A *broken* plugin is a
real distribution whose entry point names a module that does not exist, put on
``PYTHONPATH`` for the child process only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.plugins import broken_plugin_site

HEAD = """
[gateway]
id = "derm-box-01"
state_dir = "/var/lib/dermgate"

[[destinations]]
name = "pacs"
kind = "dicom"
ae_title = "ORTHANC"
host = "127.0.0.1"
port = 4242
"""


def check_config(
    tmp_path: Path, devices: str, site: Path | None = None
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "dermgate.toml"
    path.write_text(HEAD + devices, encoding="utf-8")
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def test_check_config_validates_a_third_party_drivers_options(tmp_path: Path) -> None:
    result = check_config(
        tmp_path,
        """
[[devices]]
driver = "test-crasher"
crash_after = 1.5

[[devices]]
driver = "test-crasher"
explode = true

[[devices]]
driver = "test-hanger"
chunk = 0
""",
    )
    assert result.returncode == 2
    problems = result.stderr.splitlines()
    assert len(problems) == 2, result.stderr
    assert "devices[1].explode: unknown key for driver test-crasher" in problems[0]
    assert "devices[2].chunk" in problems[1]
    assert "greater than or equal to 1" in problems[1]


def test_valid_third_party_device_passes_check_config(tmp_path: Path) -> None:
    result = check_config(tmp_path, '\n[[devices]]\ndriver = "test-hanger"\nchunk = 10\n')
    assert result.returncode == 0, result.stderr
    assert "1 device(s)" in result.stdout


def test_a_broken_plugin_is_a_clear_error_for_its_device_only(tmp_path: Path) -> None:
    site = broken_plugin_site(tmp_path)
    result = check_config(
        tmp_path,
        """
[[devices]]
driver = "serial-dermatoscope"
port = "/dev/ttyACM0"

[[devices]]
driver = "test-broken"

[[devices]]
driver = "test-crasher"
explode = true
""",
        site,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    problems = result.stderr.splitlines()
    assert len(problems) == 2, result.stderr
    broken, other = problems
    assert "devices[1].driver" in broken
    assert "'test-broken'" in broken
    assert "dermgate-broken-plugin 1.0" in broken, "names the plugin package"
    assert "dermgate_missing_module.driver:Driver" in broken
    assert "failed to load: ModuleNotFoundError" in broken
    assert "devices[2].explode: unknown key for driver test-crasher" in other, (
        "the other devices are still validated"
    )


def test_an_unused_broken_plugin_does_not_matter(tmp_path: Path) -> None:
    site = broken_plugin_site(tmp_path)
    result = check_config(
        tmp_path, '\n[[devices]]\ndriver = "serial-dermatoscope"\nport = "/dev/ttyACM0"\n', site
    )
    assert result.returncode == 0, result.stderr
