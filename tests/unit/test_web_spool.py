"""The page's live overview by server-sent events, on the in-process server.

The spool actions (audited reveal, resolve) and TLS cookies are in
``tests/e2e/test_web_spool.py``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.status.web.server import WebServer
from tests.support.web import (
    add_user,
    login,
    seed_spool,
    served,
    web_config,
)


def test_overview_is_pushed_by_server_sent_events(tmp_path: Path) -> None:
    config = web_config(tmp_path)
    add_user(config)
    seed_spool(config)

    async def scenario() -> None:
        async with served(WebServer(config)) as (base, session):
            await login(session, base)
            async with session.get(f"{base}/events") as r:
                assert r.headers["Content-Type"].startswith("text/event-stream")
                first = await asyncio.wait_for(r.content.readuntil(b"\n\n"), 10)
            assert first.startswith(b"event: overview\n")
            assert b'data-verdict="amber"' in first  # one capture set aside
            assert b'id="backlog">1<' in first

    asyncio.run(scenario())
