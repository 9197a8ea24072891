"""``dermgate conformance DRIVER`` as a third party runs it, against the template driver
of ``tests/plugins/dermgate-testdriver`` (installed by ``scripts/setup.sh --test``)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

TEMPLATE = "test-template"


def conformance(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``dermgate conformance ARGS`` (as the installed command would)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "conformance", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def test_the_template_is_installed_from_its_own_package() -> None:
    found = {ep.name: ep for ep in entry_points(group="dermgate.drivers")}
    assert TEMPLATE in found, "run scripts/setup.sh --test (it installs the test plugin)"
    dist = found[TEMPLATE].dist
    assert dist is not None
    assert dist.name == "dermgate-testdriver"


def test_the_template_driver_passes_every_check(tmp_path: Path) -> None:
    done = conformance(TEMPLATE, "--workdir", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("  ")}
    assert list(lines) == ["connect", "capture", "unplug", "reoffer", "garbage", "restart"]
    assert all(" PASS " in line for line in lines.values()), done.stdout
    assert "PASSED all 6 check(s)" in done.stdout


def test_a_failing_check_exits_1_and_is_named(tmp_path: Path) -> None:
    done = conformance(
        "test-template-broken",
        "--check",
        "capture",
        "--check",
        "reoffer",
        "--workdir",
        str(tmp_path),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("  ")}
    assert " PASS " in lines["capture"]
    assert " FAIL " in lines["reoffer"]
    assert "4 spooled objects for 3 acknowledged captures" in lines["reoffer"]
    assert "FAILED 1 of 2 check(s): reoffer" in done.stdout
    assert (tmp_path / "reoffer" / "failure.txt").read_text().strip()


@pytest.mark.parametrize(
    ("driver", "words"),
    [
        ("no-such-driver", "unknown driver 'no-such-driver'"),
        ("test-crasher", "driver test-crasher has no conformance hook"),
    ],
)
def test_a_driver_the_kit_cannot_run_exits_2(driver: str, words: str) -> None:
    done = conformance(driver)
    assert done.returncode == 2
    assert words in done.stderr
    assert done.stdout == ""


def test_a_workdir_it_cannot_use_exits_2_before_any_check(tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder\n", encoding="utf-8")
    used = tmp_path / "last-run"
    (used / "connect").mkdir(parents=True)
    for workdir, words in ((a_file, "not a folder"), (used, "not empty")):
        done = conformance(TEMPLATE, "--workdir", str(workdir))
        assert done.returncode == 2, done.stdout + done.stderr
        assert words in done.stderr
        assert "Traceback" not in done.stderr
        assert done.stdout == "", "no check ran"
    assert sorted(p.name for p in used.iterdir()) == ["connect"], "an old run is left as it was"
