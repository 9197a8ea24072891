"""The page's spool actions at the HTTP level: masked by default, audited reveal,
confirmed resolve, live overview by server-sent events, Secure cookie over TLS."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import aiohttp

from gateway.spool import ledger as db
from gateway.status.web.checks import WARN, certificate_checks
from gateway.status.web.server import WebServer
from tests.support.mqtt import make_tls
from tests.support.web import (
    PASSWORD,
    SEEDED_BIRTH,
    SEEDED_NAME,
    SEEDED_PID,
    add_user,
    csrf_of,
    login,
    seed_spool,
    served,
    web_config,
)


def test_reveal_is_audited_and_resolve_needs_confirmation(tmp_path: Path) -> None:
    config = web_config(tmp_path)
    add_user(config)
    wrapped, quarantined = seed_spool(config)

    async def scenario() -> None:
        async with served(WebServer(config)) as (base, session):
            await login(session, base)
            # Masked everywhere by default.
            for path in ("/", "/spool", f"/spool/{wrapped}", "/metrics", "/why"):
                async with session.get(base + path) as r:
                    text = await r.text()
                    assert r.status == 200, path
                    for value in (SEEDED_NAME, "Doe", SEEDED_PID, SEEDED_BIRTH):
                        assert value not in text, (path, value)
            async with session.get(f"{base}/spool/{wrapped}") as r:
                page = await r.text()
            assert not config.audit_path().exists()
            async with session.post(
                f"{base}/spool/{wrapped}/reveal", data={"csrf": csrf_of(page)}
            ) as r:
                shown = await r.text()
                assert r.headers["Cache-Control"] == "no-store"
            assert "Doe^Janet" in shown
            assert SEEDED_PID in shown
            assert SEEDED_BIRTH in shown
            audit = config.audit_path().read_text(encoding="ascii")
            assert audit.count("\n") == 1
            assert f"user=tech action=reveal spool_id={wrapped}" in audit
            for value in ("Doe", "Janet", SEEDED_PID, SEEDED_BIRTH):
                assert value not in audit

            # Resolve: a confirmation page first, then a fixed reason (no free text).
            async with session.get(f"{base}/spool/{quarantined}/resolve") as r:
                confirm = await r.text()
                assert "Please confirm" in confirm
            assert "resolved" not in (db.get_capture(db.open_ledger(config.ledger_path()),
                                                     quarantined).reason or "")  # fmt: skip
            async with session.post(
                f"{base}/spool/{quarantined}/resolve",
                data={"csrf": csrf_of(confirm), "resolution": "not-needed"},
            ) as r:
                assert "marked as resolved" in await r.text()
            conn = db.open_ledger(config.ledger_path())
            entry = db.get_capture(conn, quarantined)
            conn.close()
            assert entry is not None
            assert entry.state == "QUARANTINED"
            assert entry.reason is not None
            assert entry.reason.startswith("resolved by technician tech: not needed")
            assert "(was: the PACS does not accept" in entry.reason
            # No longer counted as needing attention; a second resolve is refused.
            async with session.get(f"{base}/metrics") as r:
                assert "dermgate_spool_quarantined_open 0.0" in await r.text()
            async with session.post(
                f"{base}/spool/{quarantined}/resolve",
                data={"csrf": csrf_of(confirm), "resolution": "not-needed"},
            ) as r:
                assert r.status == 409
                assert "already resolved" in await r.text()
            # Retry of a capture that is not quarantined says why it is not possible.
            async with session.post(
                f"{base}/spool/{wrapped}/retry", data={"csrf": csrf_of(confirm)}
            ) as r:
                assert r.status == 409
                assert "not QUARANTINED" in await r.text()

    asyncio.run(scenario())


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "page.crt", tmp_path / "page.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "400",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_over_tls_the_session_cookie_is_secure(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    config = web_config(tmp_path, f'tls_cert = "{cert}"\ntls_key = "{key}"')
    add_user(config)
    server = WebServer(config)

    async def scenario() -> None:
        started = asyncio.Event()
        task = asyncio.create_task(server.run(started.set))
        await asyncio.wait_for(started.wait(), 10)
        trust = ssl.create_default_context(cafile=str(cert))
        trust.check_hostname = False
        base = server.url().rstrip("/")
        assert base.startswith("https://")
        jar = aiohttp.CookieJar(unsafe=True)
        try:
            async with aiohttp.ClientSession(
                cookie_jar=jar, connector=aiohttp.TCPConnector(ssl=trust)
            ) as session:
                async with session.get(f"{base}/login") as page:
                    token = csrf_of(await page.text())
                async with session.post(
                    f"{base}/login",
                    data={"csrf": token, "user": "tech", "password": PASSWORD},
                    allow_redirects=False,
                ) as r:
                    cookie = next(
                        v for v in r.headers.getall("Set-Cookie")
                        if v.startswith("dermgate_session=")
                    )  # fmt: skip
                    assert "secure" in [p.strip().lower() for p in cookie.split(";")]
                async with session.get(f"{base}/why") as r:
                    text = await r.text()
                    assert "TLS certificate (page.crt)" in text
                    assert "Valid for 399 more days" in text
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())


def test_why_panel_warns_of_mqtt_certificates_about_to_expire(tmp_path: Path) -> None:
    """A client certificate that runs out silently cuts the box off the fleet dashboard."""
    tls = make_tls(tmp_path / "pki")  # valid for 2 days
    config = web_config(
        tmp_path,
        f'\n[mqtt]\nhost = "127.0.0.1"\ntls_ca = "{tls.ca}"\n'
        f'tls_cert = "{tls.client_cert}"\ntls_key = "{tls.client_key}"\n',
    )
    results = {r.name: r for r in certificate_checks(config)}
    client = results["MQTT client certificate (client.pem)"]
    ca = results["MQTT broker's CA certificate (ca.pem)"]
    for result in (client, ca):
        assert result.status == WARN
        assert result.finding == "Expires in 1 day."
        assert result.advice == "Renew it soon."
