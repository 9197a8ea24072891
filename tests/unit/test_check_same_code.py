"""The page's "Why isn't it sending?" and ``dermgate check --connect`` give the same
lines for the same box: the page runs :mod:`gateway.status.checks` and only adds
what the running service knows."""

from __future__ import annotations

from pathlib import Path

from gateway.demo.local_orthanc import free_port
from gateway.service.config import load_config
from gateway.status.checks.run import box_checks, connect_checks
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
