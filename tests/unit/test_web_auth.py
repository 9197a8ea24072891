"""The local page lets nobody in without a session, and guards every change."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from gateway.status.web.server import WebServer
from tests.support.web import PASSWORD, add_user, csrf_of, login, served, web_config

PROTECTED = ["/", "/why", "/spool", "/spool/1", "/spool/1/retry", "/spool/1/resolve", "/nowhere"]


def test_without_a_session_every_page_is_the_login_page(tmp_path: Path) -> None:
    config = web_config(tmp_path, "metrics_public = false")
    add_user(config)

    async def scenario() -> None:
        async with served(WebServer(config)) as (base, session):
            for path in PROTECTED:
                async with session.get(base + path) as r:
                    body = await r.text()
                    assert r.url.path == "/login", path
                    assert 'action="/login"' in body
                    assert "Spool" not in body
                    assert "Delivering" not in body
            for path in ("/spool/1/retry", "/spool/1/reveal", "/logout"):
                async with session.post(base + path, data={"csrf": "x"}) as r:
                    assert r.status == 401, path
            async with session.get(base + "/events") as r:
                assert r.status == 401
            async with session.get(base + "/metrics") as r:
                assert r.url.path == "/login"
            # Liveness and static files need no login, and /healthz says nothing else.
            async with session.get(base + "/healthz") as r:
                assert r.status == 200
                assert await r.text() == "ok\n"
            async with session.get(base + "/static/style.css") as r:
                assert r.status == 200

    asyncio.run(scenario())


def test_login_sets_a_strict_httponly_cookie_and_logout_ends_it(tmp_path: Path) -> None:
    config = web_config(tmp_path)
    add_user(config)

    async def scenario() -> None:
        async with served(WebServer(config)) as (base, session):
            async with session.get(f"{base}/login") as page:
                token = csrf_of(await page.text())
            async with session.post(
                f"{base}/login",
                data={"csrf": token, "user": "tech", "password": PASSWORD},
                allow_redirects=False,
            ) as r:
                assert r.status == 303
                cookie = next(
                    v for v in r.headers.getall("Set-Cookie") if v.startswith("dermgate_session=")
                )
                flags = [part.strip().lower() for part in cookie.split(";")]
                assert "httponly" in flags
                assert "samesite=strict" in flags
                assert "path=/" in flags
                assert "secure" not in flags  # plain HTTP on loopback
            async with session.get(f"{base}/") as r:
                html = await r.text()
                assert r.url.path == "/"
                assert "Delivering" in html or "Not delivering" in html
                assert r.headers["Cache-Control"] == "no-store"
                assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
            async with session.post(f"{base}/logout", data={"csrf": csrf_of(html)}) as r:
                assert r.url.path == "/login"
            async with session.get(f"{base}/spool") as r:
                assert r.url.path == "/login"

    asyncio.run(scenario())


def test_wrong_passwords_lock_the_user_and_the_address_out(tmp_path: Path) -> None:
    config = web_config(tmp_path, "lockout_failures = 3\nlockout_duration = 600")
    add_user(config)
    add_user(config, "other", "second good passphrase")

    async def scenario() -> None:
        async with served(WebServer(config)) as (base, session):
            for _ in range(3):
                r = await login(session, base, password="wrong password 123")
                assert r.status == 401
                assert "Wrong user name or password" in await r.text()
            # Locked now: even the right password is refused, with a plain message.
            r = await login(session, base)
            assert r.status == 429
            text = await r.text()
            assert "Too many failed logins" in text
            assert "minute" in text
            async with session.get(f"{base}/") as page:
                assert page.url.path == "/login"
            # Per address too: another user from the same address is refused as well.
            r = await login(session, base, "other", "second good passphrase")
            assert r.status == 429

    asyncio.run(scenario())


def test_state_changing_requests_need_the_csrf_token(tmp_path: Path) -> None:
    config = web_config(tmp_path)
    add_user(config)

    async def scenario() -> None:
        async with served(WebServer(config)) as (base, session):
            # The login form itself: a post without the token bound to the cookie fails.
            async with (
                aiohttp.ClientSession() as stranger,
                stranger.post(
                    f"{base}/login", data={"csrf": "forged", "user": "tech", "password": PASSWORD}
                ) as r,
            ):
                assert r.status == 403
                assert "expired" in await r.text()
            r = await login(session, base)
            assert r.url.path == "/"
            for path in ("/spool/1/retry", "/spool/1/resolve", "/spool/1/reveal", "/logout"):
                async with session.post(base + path, data={"resolution": "not-needed"}) as r:
                    assert r.status == 403, path
                    assert "not sent from this page" in await r.text()
                async with session.post(base + path, data={"csrf": "guess"}) as r:
                    assert r.status == 403, path
            # Still logged in (the forged logout did nothing).
            async with session.get(f"{base}/spool") as page:
                assert page.url.path == "/spool"
            assert not config.audit_path().exists()

    asyncio.run(scenario())


def test_parallel_wrong_passwords_cannot_outrun_the_lockout(tmp_path: Path) -> None:
    """60 wrong passwords sent at once from one address: at most ``lockout_failures``
    are ever checked, the rest are refused, and the right password is refused after."""
    config = web_config(tmp_path, "lockout_failures = 5\nlockout_duration = 600")
    add_user(config)

    async def scenario() -> None:
        async with served(WebServer(config)) as (base, session):
            async with session.get(f"{base}/login") as page:
                token = csrf_of(await page.text())

            async def attempt(password: str) -> int:
                async with session.post(
                    f"{base}/login",
                    data={"csrf": token, "user": "tech", "password": password},
                    allow_redirects=False,
                ) as r:
                    await r.read()
                    return r.status

            statuses = await asyncio.gather(
                *(attempt(f"wrong password {n:03d}") for n in range(60))
            )
            checked = statuses.count(401)
            assert 1 <= checked <= 5, statuses
            assert statuses.count(429) == 60 - checked, statuses
            # Locked now: the right password is refused, and no session was started.
            assert await attempt(PASSWORD) == 429
            async with session.get(f"{base}/") as r:
                assert r.url.path == "/login"

    asyncio.run(scenario())


def test_a_right_password_in_a_parallel_burst_is_held_back_too(tmp_path: Path) -> None:
    """The right password sent while wrong ones are still being checked does not slip
    in between: the attempts in flight count against the limit."""
    config = web_config(tmp_path, "lockout_failures = 5\nlockout_duration = 600")
    add_user(config)

    async def scenario() -> None:
        async with served(WebServer(config)) as (base, session):
            async with session.get(f"{base}/login") as page:
                token = csrf_of(await page.text())

            async def attempt(password: str) -> int:
                async with session.post(
                    f"{base}/login",
                    data={"csrf": token, "user": "tech", "password": password},
                    allow_redirects=False,
                ) as r:
                    await r.read()
                    return r.status

            wrong = [asyncio.create_task(attempt(f"wrong password {n:03d}")) for n in range(60)]
            # Once the first answer is back, every wrong attempt has reached the server.
            await asyncio.wait(wrong, return_when=asyncio.FIRST_COMPLETED)
            right = await attempt(PASSWORD)
            statuses = await asyncio.gather(*wrong)
            assert right == 429, statuses
            assert statuses.count(401) <= 5, statuses

    asyncio.run(scenario())
