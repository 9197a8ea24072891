"""Where the repository's own files are, for tests that read them (image/, docs/, drivers/)."""

from __future__ import annotations

from pathlib import Path

#: The repository's root folder (the one holding pyproject.toml).
REPO_ROOT = Path(__file__).resolve().parents[2]
