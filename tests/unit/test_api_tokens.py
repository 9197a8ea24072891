"""API tokens: stored only as hashes, checked exactly, file kept private and re-read
when it changes; a damaged file is refused with a message that names it, never its
content."""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.status.web.tokens import (
    TokenExists,
    TokenFile,
    Tokens,
    TokensError,
    TokensUnreadable,
    check_token_name,
)
from tests.support.api import api_config


def test_a_token_is_stored_as_a_hash_only_and_matches_exactly(tmp_path: Path) -> None:
    path = tmp_path / "web" / "api_tokens.json"
    tokens = Tokens.load(path)
    kiosk = tokens.add("kiosk")
    ehr = tokens.add("ehr-launch")
    tokens.save(path)

    text = path.read_text()
    assert kiosk not in text
    assert ehr not in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(kiosk) >= 43  # 32 random bytes, URL-safe base64

    again = Tokens.load(path)
    assert again.match(kiosk) == "kiosk"
    assert again.match(ehr) == "ehr-launch"
    assert again.match(kiosk[:-1]) is None
    assert again.match(kiosk + "x") is None
    assert again.match("") is None
    assert again.match("x" * 100_000) is None
    assert again.names() == ["ehr-launch", "kiosk"]
    assert again.created("kiosk").endswith("Z")


def test_an_existing_name_needs_replace_and_replacing_ends_the_old_token(tmp_path: Path) -> None:
    tokens = Tokens({})
    first = tokens.add("kiosk")
    with pytest.raises(TokenExists):
        tokens.add("kiosk")
    assert tokens.match(first) == "kiosk"
    second = tokens.add("kiosk", replace=True)
    assert second != first
    assert tokens.match(first) is None
    assert tokens.match(second) == "kiosk"
    assert tokens.remove("kiosk")
    assert not tokens.remove("kiosk")
    assert tokens.match(second) is None


@pytest.mark.parametrize("name", ["", "a" * 33, "has space", "dot.ted", "é", "semi;colon"])
def test_token_names_are_plain(name: str) -> None:
    with pytest.raises(ValueError, match="1-32 letters"):
        check_token_name(name)
    with pytest.raises(ValueError, match="1-32 letters"):
        Tokens({}).add(name)


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (b"\xff\xfe secret-ish", "not UTF-8"),
        (b'{"version": 1, "tokens": {"kiosk": ', "not valid JSON"),
        (b'{"version": 2, "tokens": {}}', "not a DermGate API tokens file"),
        (b'{"version": 1}', "no tokens table"),
        (
            b'{"version": 1, "tokens": {"kiosk": {"sha256": "Doe^Janet", "created": "x"}}}',
            "an entry is unreadable",
        ),
        (
            b'{"version": 1, "tokens": {"bad name": {"sha256": "'
            + b"0" * 64
            + b'", "created": "2026-01-01T00:00:00Z"}}}',
            "an entry is unreadable",
        ),
    ],
)
def test_a_damaged_file_is_refused_naming_the_file_not_its_content(
    tmp_path: Path, content: bytes, kind: str
) -> None:
    path = tmp_path / "api_tokens.json"
    path.write_bytes(content)
    with pytest.raises(TokensError) as caught:
        Tokens.load(path)
    message = str(caught.value)
    assert str(path) in message
    assert kind in message
    assert "Doe" not in message
    assert "secret" not in message


def test_the_running_service_sees_a_removed_token_at_once(tmp_path: Path) -> None:
    path = tmp_path / "api_tokens.json"
    live = TokenFile(path)
    current = live.current()
    assert isinstance(current, Tokens)
    assert not current.tokens

    tokens = Tokens({})
    token = tokens.add("kiosk")
    tokens.save(path)
    current = live.current()
    assert isinstance(current, Tokens)
    assert current.match(token) == "kiosk"

    tokens.remove("kiosk")
    tokens.save(path)
    current = live.current()
    assert isinstance(current, Tokens)
    assert current.match(token) is None

    path.write_text("{broken")
    assert isinstance(live.current(), TokensUnreadable)
    os.unlink(path)
    current = live.current()
    assert isinstance(current, Tokens)
    assert not current.tokens


def test_the_file_is_the_documented_json(tmp_path: Path) -> None:
    path = tmp_path / "api_tokens.json"
    tokens = Tokens({})
    tokens.add("kiosk")
    tokens.save(path)
    raw = json.loads(path.read_text())
    assert raw["version"] == 1
    assert set(raw["tokens"]["kiosk"]) == {"sha256", "created"}


def test_check_config_names_a_damaged_tokens_file(tmp_path: Path) -> None:
    config, _ = api_config(tmp_path)
    tokens = tmp_path / "state" / "web" / "api_tokens.json"
    tokens.parent.mkdir(parents=True)
    tokens.write_text('{"version": 1, "tokens": {"kiosk": {"sha256": "Doe^Janet"}}}')
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["check-config", str(config)])
    assert code == 2
    assert f"[web] API tokens file: the API tokens file {tokens} is damaged" in err.getvalue()
    assert "Doe" not in err.getvalue()
