"""``dermgate user add``: logins of the local page are stored as salted scrypt hashes."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

from gateway.users import Users


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "dermgate.toml"
    path.write_text(
        f'[gateway]\nid = "t"\nstate_dir = "{tmp_path / "state"}"\n\n[web]\n', encoding="utf-8"
    )
    return path


def _add(config: Path, name: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "user", "add", name, "--config", str(config),
         "--password-stdin"],
        input=stdin, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def test_user_add_stores_a_salted_hash_in_a_private_file(tmp_path: Path) -> None:
    config = _config(tmp_path)
    result = _add(config, "tech", "correct horse battery\n")
    assert result.returncode == 0, result.stderr
    path = tmp_path / "state" / "web" / "users.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text(encoding="utf-8")
    assert "correct horse battery" not in text
    record = json.loads(text)["users"]["tech"]
    assert record["scheme"] == "scrypt"
    assert record["n"] >= 2**14
    users = Users.load(path)
    assert users.verify("tech", "correct horse battery")
    assert not users.verify("tech", "correct horse batterY")
    assert not users.verify("nobody", "correct horse battery")

    # A second user with the same password gets a different salt and hash.
    assert _add(config, "tech2", "correct horse battery\n").returncode == 0
    both = json.loads(path.read_text(encoding="utf-8"))["users"]
    assert both["tech"]["hash"] != both["tech2"]["hash"]
    assert both["tech"]["salt"] != both["tech2"]["salt"]


def test_user_add_refuses_weak_and_empty_passwords(tmp_path: Path) -> None:
    config = _config(tmp_path)
    for weak, words in (("\n", "empty"), ("short1\n", "too short"), ("aaaaaaaaaaaa\n", "repeats"),
                        ("tech-password-1\n", "user name")):  # fmt: skip
        result = _add(config, "tech", weak)
        assert result.returncode == 2
        assert words in result.stderr
        assert "nothing changed" in result.stderr
    assert not (tmp_path / "state" / "web" / "users.json").exists()


def test_user_add_bad_name_and_bad_config_are_usage_errors(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert _add(config, "../x", "correct horse battery\n").returncode == 2
    assert _add(tmp_path / "missing.toml", "tech", "correct horse battery\n").returncode == 2
