"""A broken third-party driver plugin: an installed distribution whose module is missing.

Put its site folder on ``PYTHONPATH`` for a child process only.
"""

from __future__ import annotations

from pathlib import Path


def broken_plugin_site(tmp_path: Path) -> Path:
    """A site folder holding one installed distribution with a broken driver."""
    site = tmp_path / "site"
    dist = site / "dermgate_broken_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: dermgate-broken-plugin\nVersion: 1.0\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(
        "[dermgate.drivers]\ntest-broken = dermgate_missing_module.driver:Driver\n",
        encoding="utf-8",
    )
    return site
