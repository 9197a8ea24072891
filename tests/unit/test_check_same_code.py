"""The page's "Why isn't it sending?" and ``dermgate check --connect`` give the same
lines for the same box: the page runs :mod:`gateway.status.checks` and only adds
what the running service knows."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.cli.check import render_json, render_lines
from gateway.demo.local_orthanc import free_port
from gateway.service.config import load_config
from gateway.status.checks.result import CheckResult
from gateway.status.checks.run import box_checks, connect_checks, guarded
from gateway.status.web.checks import run_checks
from gateway.status.web.data import read_figures


def test_the_page_shows_every_line_of_the_check_command(tmp_path: Path) -> None:
    folder = tmp_path / "missing-photos"
    config_path = tmp_path / "dermgate.toml"
    config_path.write_text(
        f'[gateway]\nid = "box"\nstate_dir = "{tmp_path / "state"}"\n'
        f"listen_port = {free_port()}\n"
        f'\n[[destinations]]\nname = "pacs"\nkind = "dicom"\nae_title = "PACS"\n'
        f'host = "127.0.0.1"\nport = {free_port()}\n'
        f'\n[[devices]]\ndriver = "photo-folder"\nname = "camera"\nfolder = "{folder}"\n'
        '\n[web]\nlisten = "127.0.0.1:18080"\n',
        encoding="utf-8",
    )
    config = load_config(config_path, service=True)
    config.gateway.state_dir.mkdir()
    figures = read_figures(
        config.ledger_path(), config.spool_dir(), config.spool.reserve_mb << 20, []
    )
    page = {r.name: r.status for r in run_checks(config, figures)}
    command = {r.name: r.status for r in box_checks(config) + connect_checks(config)}
    assert command.items() <= page.items(), (command, page)
    assert page["Device camera (folder " + str(folder) + ")"] == "warn"
    assert page["PACS pacs (PACS at 127.0.0.1:" + str(config.destinations[0].port) + ")"] == "fail"


def test_a_check_that_raises_is_one_cannot_tell_line_and_a_warning_in_the_command() -> None:
    def broken() -> CheckResult:
        raise OSError("/secret/path/Doe^Jane")

    (line,) = guarded("Clock", broken)
    assert (line.name, line.status) == ("Clock", "unknown")
    assert "Doe" not in line.finding
    assert render_lines([line]).startswith("WARN  Clock: Cannot tell (OSError).")
    assert json.loads(render_json([line]))[0]["status"] == "warn"
