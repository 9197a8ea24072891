"""``dermgate user add``: logins of the local page are stored as salted scrypt hashes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from gateway.status.web.users import Users


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "dermgate.toml"
    path.write_text(
        f'[gateway]\nid = "t"\nstate_dir = "{tmp_path / "state"}"\n\n'
        '[[destinations]]\nname = "pacs"\nkind = "dicom"\nae_title = "PACS"\nhost = "127.0.0.1"\nport = 11112\n\n'
        "[web]\n",
        encoding="utf-8",
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


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def test_files_written_as_root_belong_to_the_owner_of_state_dir(tmp_path: Path) -> None:
    """The README runs `dermgate user add` as root, the service runs as its own user:
    the users file and the folder it is in must be the service's."""
    assert os.geteuid() == 0, "this test needs root (as the README's commands do)"
    config = _config(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 12345, 23456)
    assert _add(config, "tech", "correct horse battery\n").returncode == 0
    users = state / "web" / "users.json"
    for path in (users, users.parent):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (12345, 23456), path
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    # A password change and a removal keep it so.
    assert _add(config, "tech2", "correct horse battery\n").returncode == 0
    assert _cli("user", "remove", "tech", "--config", str(config)).returncode == 0
    st = users.stat()
    assert (st.st_uid, st.st_gid) == (12345, 23456)
    assert stat.S_IMODE(st.st_mode) == 0o600


def test_user_list_and_remove(tmp_path: Path) -> None:
    config = _config(tmp_path)
    listed = _cli("user", "list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == ""
    assert "no users" in listed.stderr
    for name in ("tech", "alice"):
        assert _add(config, name, "correct horse battery\n").returncode == 0
    listed = _cli("user", "list", "--config", str(config))
    assert (listed.returncode, listed.stdout) == (0, "alice\ntech\n")
    removed = _cli("user", "remove", "alice", "--config", str(config))
    assert removed.returncode == 0, removed.stderr
    assert _cli("user", "list", "--config", str(config)).stdout == "tech\n"
    again = _cli("user", "remove", "alice", "--config", str(config))
    assert again.returncode == 1
    assert "no user alice" in again.stderr
    assert _cli("user", "list", "--config", str(tmp_path / "missing.toml")).returncode == 2
    # A damaged file: list and remove say so and change nothing.
    path = tmp_path / "state" / "web" / "users.json"
    path.write_bytes(b"\xff\xfe not json")
    for args in (("list",), ("remove", "tech")):
        result = _cli("user", *args, "--config", str(config))
        assert result.returncode == 1, args
        assert str(path) in result.stderr
        assert "damaged" in result.stderr
    assert path.read_bytes() == b"\xff\xfe not json"


def test_check_config_reports_a_damaged_users_file(tmp_path: Path) -> None:
    config = _config(tmp_path)
    ok = _cli("check-config", str(config))
    assert ok.returncode == 0, ok.stderr  # no users file yet: fine
    path = tmp_path / "state" / "web" / "users.json"
    path.parent.mkdir(parents=True)
    for damage in (
        '{"version": 1, "users": {"tech": "hunter2-secret"}}',
        '{"version": 1, "users": {"tech": {"scheme": "scrypt", "salt": "hunter2-secret"}}}',
        "hunter2-secret",
        '{"version": 7}',
    ):
        path.write_text(damage, encoding="utf-8")
        result = _cli("check-config", str(config))
        assert result.returncode == 2, damage
        assert str(path) in result.stderr
        assert "hunter2" not in result.stderr + result.stdout


def test_a_users_file_outside_state_dir_is_handed_over_alone(tmp_path: Path) -> None:
    assert os.geteuid() == 0, "this test needs root (as the README's commands do)"
    state, elsewhere = tmp_path / "state", tmp_path / "etc"
    state.mkdir()
    elsewhere.mkdir()
    os.chown(state, 12345, 23456)
    config = tmp_path / "dermgate.toml"
    config.write_text(
        f'[gateway]\nid = "t"\nstate_dir = "{state}"\n\n[web]\n'
        f'users_file = "{elsewhere / "users.json"}"\n',
        encoding="utf-8",
    )
    assert _add(config, "tech", "correct horse battery\n").returncode == 0
    st = (elsewhere / "users.json").stat()
    assert (st.st_uid, st.st_gid) == (12345, 23456)
    assert (elsewhere.stat().st_uid, elsewhere.stat().st_gid) == (0, 0)
