"""The local page of a real ``dermgate run``: logins changed or removed by the CLI end
their sessions at once, a damaged or missing users file gets a clear page, bad spool
ids get 404, and a browser leaving the live overview is not an error."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import aiohttp

from gateway.service.config import load_config
from tests.support.gateway_process import GatewayProcess
from tests.support.waiting import wait_for
from tests.support.web import (
    PASSWORD,
    cookie_client,
    csrf_of,
    login_status,
    run_cli,
    seed_spool,
    service_config,
    user_add,
)

OTHER_PASSWORD = "second good passphrase"
NEW_PASSWORD = "a brand new passphrase"


def _start(
    gateway_factory: Callable[[Path], GatewayProcess], config: Path, base: str
) -> GatewayProcess:
    gateway = gateway_factory(config)
    gateway.wait_running()

    async def up() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(f"{base}/healthz") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    wait_for(lambda: asyncio.run(up()), 30, "the page to answer")
    return gateway


async def _where(session: aiohttp.ClientSession, base: str, path: str = "/") -> str:
    """Where a GET of ``path`` ends up: ``path`` itself, or the login page."""
    async with session.get(base + path) as r:
        await r.read()
        assert r.status == 200, (path, r.status)
        return r.url.path


def test_changing_or_removing_a_user_ends_its_sessions_at_once(
    tmp_path: Path, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    config, base = service_config(tmp_path)
    user_add(config, "tech", PASSWORD)
    user_add(config, "other", OTHER_PASSWORD)
    _start(gateway_factory, config, base)

    async def scenario() -> None:
        async with cookie_client() as tech, cookie_client() as other, cookie_client() as watcher:
            assert await login_status(tech, base, "tech", PASSWORD) == 303
            assert await login_status(other, base, "other", OTHER_PASSWORD) == 303
            assert await login_status(watcher, base, "tech", PASSWORD) == 303
            assert await _where(tech, base) == "/"
            assert await _where(other, base, "/spool") == "/spool"
            async with watcher.get(f"{base}/events") as live:
                first = await asyncio.wait_for(live.content.readuntil(b"\n\n"), 10)
                assert first.startswith(b"event: overview\n")

                # A new password for tech (the service keeps running): tech's sessions
                # end at once, including the live overview; other's session stays.
                await asyncio.to_thread(user_add, config, "tech", NEW_PASSWORD)
                assert await _where(tech, base) == "/login"
                assert await _where(tech, base, "/spool") == "/login"
                async with tech.post(f"{base}/logout", data={"csrf": "x"}) as r:
                    assert r.status == 401
                ended = b""
                while b"event: logout" not in ended:
                    ended = await asyncio.wait_for(live.content.readuntil(b"\n\n"), 10)
            assert await _where(other, base) == "/"
            assert await login_status(tech, base, "tech", PASSWORD) == 401
            assert await login_status(tech, base, "tech", NEW_PASSWORD) == 303
            assert await _where(tech, base) == "/"

            # Removing other ends other's session; tech's new one stays.
            result = await asyncio.to_thread(run_cli, "user", "remove", "other", "--config",
                                             str(config))  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert "removed user other" in result.stdout
            assert await _where(other, base) == "/login"
            assert await login_status(other, base, "other", OTHER_PASSWORD) == 401
            assert await _where(tech, base) == "/"

    asyncio.run(scenario())

    listed = run_cli("user", "list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["tech"]
    assert "scrypt" not in listed.stdout
    missing = run_cli("user", "remove", "nobody", "--config", str(config))
    assert missing.returncode == 1
    assert "no user nobody" in missing.stderr
    assert "nothing changed" in missing.stderr


def test_a_damaged_or_missing_users_file_gets_a_clear_page_and_one_log_line(
    tmp_path: Path, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    config, base = service_config(tmp_path)
    user_add(config, "tech", PASSWORD)
    users_file = tmp_path / "state" / "web" / "users.json"
    gateway = _start(gateway_factory, config, base)

    async def scenario() -> None:
        async with cookie_client() as tech, cookie_client() as stranger:
            assert await login_status(tech, base, "tech", PASSWORD) == 303
            users_file.write_text('{"version": 1, "users": {"tech": SECRET-ISH', encoding="utf-8")
            for client, path in ((tech, "/"), (tech, "/spool"), (stranger, "/login")) * 3:
                async with client.get(base + path) as r:
                    text = await r.text()
                    assert r.status == 503, (path, r.status, text)
                    assert "users file" in text
                    assert "cannot be read" in text
                    assert "check-config" in text
                    assert "SECRET" not in text
                    assert "Traceback" not in text
            async with stranger.post(
                f"{base}/login", data={"csrf": "x", "user": "tech", "password": PASSWORD}
            ) as r:
                assert r.status == 503
                assert "cannot be read" in await r.text()

            # check-config names the file and the problem, never its content.
            result = await asyncio.to_thread(run_cli, "check-config", str(config))
            assert result.returncode == 2, result.stdout
            assert str(users_file) in result.stderr
            assert "SECRET" not in result.stderr + result.stdout

            # Missing: nobody can log in, and the page says how to add a login.
            users_file.unlink()
            for _ in range(3):
                async with stranger.get(f"{base}/login") as r:
                    text = await r.text()
                    assert r.status == 503
                    assert "dermgate user add" in text

            # Fixed with the CLI: logins work again without a restart.
            await asyncio.to_thread(user_add, config, "tech", PASSWORD)
            assert await login_status(stranger, base, "tech", PASSWORD) == 303
            assert await _where(stranger, base) == "/"

    asyncio.run(scenario())
    log = gateway.log()
    assert "Traceback" not in log
    damaged = [line for line in log.splitlines() if "users file" in line and "ERROR" in line]
    assert len(damaged) == 1, damaged
    assert str(users_file) in damaged[0]
    assert "SECRET" not in log
    missing = [line for line in log.splitlines() if "no users file" in line]
    assert len(missing) == 1, missing


def test_bad_spool_ids_are_not_found(
    tmp_path: Path, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    config, base = service_config(tmp_path)
    user_add(config, "tech", PASSWORD)
    gateway = _start(gateway_factory, config, base)

    async def scenario() -> None:
        async with cookie_client() as tech:
            assert await login_status(tech, base, "tech", PASSWORD) == 303
            async with tech.get(f"{base}/") as r:
                csrf = csrf_of(await r.text())
            # Capture 1 exists; its id written in other digits names nothing.
            await asyncio.to_thread(seed_spool, load_config(config))
            async with tech.get(f"{base}/spool/1") as r:
                assert r.status == 200
            for path in ("/spool/\u0661", "/spool/\u0661/retry", "/spool/\uff11"):
                async with tech.get(base + path) as r:
                    assert r.status == 404, (path, r.status)
            huge = "99999999999999999999999"
            for path in (f"/spool/{huge}", "/spool/\u0663", "/spool/\u0663/retry", f"/spool/{2**64}",
                         "/spool/9223372036854775808", "/spool/9223372036854775808/retry",
                         f"/spool/{huge}/resolve", "/spool/\uff11"):  # fmt: skip
                async with tech.get(base + path) as r:
                    assert r.status == 404, (path, r.status)
                    assert "Traceback" not in await r.text()
            for path in (f"/spool/{huge}/reveal", f"/spool/{huge}/retry", "/spool/\u0663/reveal",
                         "/spool/9223372036854775808/reveal",
                         "/spool/9223372036854775808/resolve"):  # fmt: skip
                async with tech.post(base + path, data={"csrf": csrf}) as r:
                    assert r.status == 404, (path, r.status)

    asyncio.run(scenario())
    assert "Traceback" not in gateway.log()


def test_a_browser_leaving_the_live_overview_logs_nothing_above_debug(
    tmp_path: Path, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    config, base = service_config(tmp_path)
    user_add(config, "tech", PASSWORD)
    gateway = _start(gateway_factory, config, base)

    async def scenario() -> None:
        # A browser that leaves the live overview: the connection just goes away.
        mark = len(gateway.log())
        for _ in range(3):
            async with cookie_client() as viewer:
                assert await login_status(viewer, base, "tech", PASSWORD) == 303
                live = await viewer.get(f"{base}/events")
                await asyncio.wait_for(live.content.readuntil(b"\n\n"), 10)
                assert live.connection is not None
                live.connection.transport.abort()  # type: ignore[union-attr]
                live.release()
            await asyncio.sleep(0.5)
        await asyncio.sleep(18)  # past the next keep-alive (15 s) of each stream
        tail = gateway.log()[mark:]
        noisy = [
            line
            for line in tail.splitlines()
            if re.search(r"\b(INFO|WARNING|ERROR|CRITICAL)\b", line) and "logged in" not in line
        ]
        assert noisy == [], noisy
        assert "Traceback" not in tail

    asyncio.run(scenario())
