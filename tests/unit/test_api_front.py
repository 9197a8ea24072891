"""The API's front door in process: without a context stage every endpoint answers
503 JSON (after authentication), and a damaged tokens file refuses tokens with 503
(the file is named in the log once, its content never)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from gateway.status.web.api_routes import ApiRoutes
from gateway.status.web.server import WebServer
from gateway.status.web.tokens import Tokens
from tests.support.api import call
from tests.support.web import served, web_config

ENDPOINTS = [
    ("GET", "/api/v1/worklist", None),
    ("GET", "/api/v1/sessions", None),
    ("POST", "/api/v1/sessions", {"device": "scope", "unidentified": True}),
    ("GET", "/api/v1/sessions/1", None),
    ("DELETE", "/api/v1/sessions/1", None),
    ("POST", "/api/v1/sessions/1/lesion", {"tracking_id": "L01"}),
    ("GET", "/api/v1/sessions/1/lesions", None),
    ("GET", "/api/v1/held", None),
    ("POST", "/api/v1/held/assign", {"spool_ids": [1], "session": 1}),
]


def test_without_a_context_stage_every_endpoint_is_503_json(tmp_path: Path) -> None:
    config = web_config(tmp_path)
    tokens = Tokens({})
    token = tokens.add("kiosk")
    tokens.save(config.tokens_path())

    async def scenario() -> None:
        async with served(WebServer(config)) as (base, session):
            for method, path, body in ENDPOINTS:
                refused = await call(session, method, base + path, body=body)
                assert refused.status == 401, path
                answer = await call(session, method, base + path, token=token, body=body)
                assert (answer.status, answer.code) == (503, "no_context"), path

    asyncio.run(scenario())


def test_a_damaged_tokens_file_refuses_tokens_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = web_config(tmp_path)
    path = config.tokens_path()
    path.parent.mkdir(parents=True)
    path.write_text('{"version": 1, "tokens": {"kiosk": "Doe^Janet"}}')

    async def scenario() -> None:
        async with served(WebServer(config)) as (base, session):
            for _ in range(3):
                answer = await call(session, "GET", f"{base}/api/v1/held", token="whatever")
                assert (answer.status, answer.code) == (503, "tokens_unavailable")

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records if "API tokens" in r.getMessage()]
    assert len(lines) == 1
    assert str(path) in lines[0]
    assert "Doe" not in caplog.text


def test_no_other_part_of_the_page_shadows_an_api_method() -> None:
    # The page's route mixins share one class: a helper of the same name in another
    # mixin (a page's "_desk" that answers with an HTML 404) would silently win.
    for name, member in vars(ApiRoutes).items():
        if name.startswith("__"):
            continue
        assert WebServer.__dict__.get(name, getattr(WebServer, name)) is member, name
