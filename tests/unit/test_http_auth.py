"""DICOMweb destination credentials over real HTTP: basic, a bearer token file that is
rotated, the OAuth2 client credentials grant against a token endpoint that counts its
calls and answers badly on purpose, and the TLS context that always verifies."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import ssl
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.core.config.destinations import DicomwebDestination
from gateway.forward import http_auth
from gateway.forward.http_auth import (
    AuthError,
    certificate_problem,
    client_ssl_context,
    credentials_for,
)
from tests.support.http_auth import (
    CLIENT_ID,
    CLIENT_SECRET,
    TokenEndpoint,
    secret_file,
    server_tls,
    serving,
)
from tests.support.mqtt import make_tls

PLAIN = client_ssl_context(None)


def destination(**keys: Any) -> DicomwebDestination:
    """A DICOMweb destination with the given auth keys."""
    return DicomwebDestination.model_validate(
        {"name": "cloud", "kind": "dicomweb", "url": "https://store.example.org/dicomWeb", **keys}
    )


def oauth2(tmp_path: Path, token_url: str, **keys: Any) -> DicomwebDestination:
    """An oauth2 destination whose client secret file holds :data:`CLIENT_SECRET`."""
    secret = secret_file(tmp_path / "client_secret", CLIENT_SECRET + "\n")
    return destination(
        auth="oauth2",
        token_url=token_url,
        client_id=CLIENT_ID,
        client_secret_file=str(secret),
        **keys,
    )


def protected_app(expected: dict[str, str]) -> web.Application:
    """A resource that answers 200 only to the expected Authorization header."""

    async def handler(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != expected["header"]:
            return web.Response(status=401)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/studies", handler)
    return app


async def test_no_auth_sends_no_header() -> None:
    credentials = credentials_for(destination(), PLAIN)
    async with aiohttp.ClientSession() as session:
        assert await credentials.headers(session) == {}
    credentials.rejected()  # nothing to forget; no error


async def test_basic_is_accepted_by_a_server_and_follows_a_new_password(tmp_path: Path) -> None:
    password = secret_file(tmp_path / "password", "pä ss:word\n")
    credentials = credentials_for(
        destination(auth="basic", username="dermgate", password_file=str(password)), PLAIN
    )
    expected = {"header": "Basic " + base64.b64encode(b"dermgate:p\xc3\xa4 ss:word").decode()}
    async with serving(protected_app(expected)) as base, aiohttp.ClientSession() as session:
        async with session.get(f"{base}/studies", headers=await credentials.headers(session)) as r:
            assert r.status == 200
        # The password changes on the server and in the file: the next request follows.
        secret_file(password, "second password, longer\r\nignored line\n")
        expected["header"] = (
            "Basic " + base64.b64encode(b"dermgate:second password, longer").decode()
        )
        async with session.get(f"{base}/studies", headers=await credentials.headers(session)) as r:
            assert r.status == 200


async def test_basic_username_with_a_colon_is_refused(tmp_path: Path) -> None:
    password = secret_file(tmp_path / "password", "x\n")
    with pytest.raises(AuthError, match="cannot contain ':'"):
        credentials_for(
            destination(auth="basic", username="a:b", password_file=str(password)), PLAIN
        )


async def test_bearer_token_file_is_reread_when_rotated(tmp_path: Path) -> None:
    token = secret_file(tmp_path / "token", "  first-token.abc  \n")
    credentials = credentials_for(destination(auth="bearer", token_file=str(token)), PLAIN)
    async with aiohttp.ClientSession() as session:
        assert await credentials.headers(session) == {"Authorization": "Bearer first-token.abc"}
        # Rotation by rename (a new inode), as a secrets agent does it.
        secret_file(tmp_path / "token.new", "second-token\n").replace(token)
        assert await credentials.headers(session) == {"Authorization": "Bearer second-token"}
        # Rotation in place, same length, and the modification time put back: the file
        # looks unchanged, until the server refuses the token.
        before = token.stat()
        token.write_text("third--token\n", encoding="utf-8")
        os.utime(token, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert await credentials.headers(session) == {"Authorization": "Bearer second-token"}
        credentials.rejected()
        assert await credentials.headers(session) == {"Authorization": "Bearer third--token"}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "does not exist"),
        ("", "is empty"),
        ("   \nsecond-line-token\n", "is empty"),
        ("two words\n", "holds no bearer token"),
    ],
)
async def test_bearer_unusable_token_file_names_the_file_not_the_token(
    tmp_path: Path, content: str | None, reason: str
) -> None:
    token = tmp_path / "token"
    if content is not None:
        secret_file(token, content)
    credentials = credentials_for(destination(auth="bearer", token_file=str(token)), PLAIN)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(AuthError) as caught:
            await credentials.headers(session)
    message = str(caught.value)
    assert reason in message
    assert str(token) in message
    assert "second-line-token" not in message
    assert "words" not in message
    # Fixed on disk: the next request works without restarting anything.
    secret_file(token, "good-token\n")
    async with aiohttp.ClientSession() as session:
        assert await credentials.headers(session) == {"Authorization": "Bearer good-token"}


@pytest.mark.parametrize("kind", ["fifo", "directory"])
async def test_a_token_path_that_is_no_file_is_refused_without_hanging(
    tmp_path: Path, kind: str
) -> None:
    token = tmp_path / "token"
    if kind == "fifo":
        os.mkfifo(token)  # opening it would wait for a writer for ever
    else:
        token.mkdir()
    credentials = credentials_for(destination(auth="bearer", token_file=str(token)), PLAIN)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(AuthError, match=f"the token file {token} cannot be read"):
            async with asyncio.timeout(5):
                await credentials.headers(session)


async def test_a_token_file_others_can_read_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = secret_file(tmp_path / "token", "tok-secret-value\n")
    token.chmod(0o644)
    credentials = credentials_for(destination(auth="bearer", token_file=str(token)), PLAIN)
    with caplog.at_level(logging.DEBUG, logger="gateway.forward.http_auth"):
        async with aiohttp.ClientSession() as session:
            await credentials.headers(session)
            secret_file(token, "tok-secret-value2\n").chmod(0o644)
            await credentials.headers(session)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"the token file {token} can be read by other users; chmod 600 it"]
    assert not any("tok-secret-value" in r.getMessage() for r in caplog.records)


async def test_oauth2_fetches_once_for_concurrent_requests_with_basic_client_auth(
    tmp_path: Path,
) -> None:
    endpoint = TokenEndpoint()
    async with serving(endpoint.app()) as base, aiohttp.ClientSession() as session:
        credentials = credentials_for(
            oauth2(tmp_path, f"{base}/token", scope="dicom.write read"), PLAIN
        )
        results = await asyncio.gather(*(credentials.headers(session) for _ in range(8)))
        assert results == [{"Authorization": "Bearer tok-1"}] * 8
        assert await credentials.headers(session) == {"Authorization": "Bearer tok-1"}
    assert len(endpoint.calls) == 1
    call = endpoint.calls[0]
    assert call.client_auth == "basic"  # RFC 6749 §2.3.1, the secret not in the body
    assert call.form == {"grant_type": "client_credentials", "scope": "dicom.write read"}


async def test_oauth2_token_is_fetched_again_when_it_expires(tmp_path: Path) -> None:
    endpoint = TokenEndpoint(expires_in=1)
    async with serving(endpoint.app()) as base, aiohttp.ClientSession() as session:
        credentials = credentials_for(oauth2(tmp_path, f"{base}/token"), PLAIN)
        assert await credentials.headers(session) == {"Authorization": "Bearer tok-1"}
        assert await credentials.headers(session) == {"Authorization": "Bearer tok-1"}
        await asyncio.sleep(1.0)  # cached until expiry less a fifth of its life
        assert await credentials.headers(session) == {"Authorization": "Bearer tok-2"}
    assert len(endpoint.calls) == 2


@pytest.mark.parametrize("expires_in", [None, "3600"])
async def test_oauth2_without_or_with_a_string_expires_in_is_cached(
    tmp_path: Path, expires_in: str | None
) -> None:
    endpoint = TokenEndpoint(expires_in=expires_in)
    async with serving(endpoint.app()) as base, aiohttp.ClientSession() as session:
        credentials = credentials_for(oauth2(tmp_path, f"{base}/token"), PLAIN)
        for _ in range(3):
            assert await credentials.headers(session) == {"Authorization": "Bearer tok-1"}
    assert len(endpoint.calls) == 1


async def test_oauth2_rejection_fetches_a_new_token(tmp_path: Path) -> None:
    endpoint = TokenEndpoint()
    seen: list[str] = []

    async def resource(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        seen.append(token)
        return web.Response(status=200 if endpoint.valid(token) else 401)

    store = web.Application()
    store.router.add_post("/studies", resource)
    async with (
        serving(endpoint.app()) as token_base,
        serving(store) as store_base,
        aiohttp.ClientSession() as session,
    ):
        credentials = credentials_for(oauth2(tmp_path, f"{token_base}/token"), PLAIN)

        async def post() -> int:
            headers = await credentials.headers(session)
            async with session.post(f"{store_base}/studies", headers=headers) as r:
                return r.status

        assert await post() == 200
        endpoint.revoked.add("tok-1")  # the service revoked it before its expiry
        assert await post() == 401
        credentials.rejected()
        assert await post() == 200
    assert seen == ["tok-1", "tok-1", "tok-2"]
    assert len(endpoint.calls) == 2


async def test_oauth2_falls_back_to_the_secret_in_the_body_and_remembers(tmp_path: Path) -> None:
    endpoint = TokenEndpoint(accepts="post")
    async with serving(endpoint.app()) as base, aiohttp.ClientSession() as session:
        credentials = credentials_for(oauth2(tmp_path, f"{base}/token"), PLAIN)
        assert await credentials.headers(session) == {"Authorization": "Bearer tok-1"}
        credentials.rejected()
        assert await credentials.headers(session) == {"Authorization": "Bearer tok-2"}
    # Basic refused, then the body; the next fetch goes straight to the body.
    assert [c.client_auth for c in endpoint.calls] == ["none", "post", "post"]
    assert endpoint.calls[1].form == {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
    }
    assert endpoint.calls[1].authorization is None  # never both methods in one request


async def test_oauth2_reads_a_new_client_secret(tmp_path: Path) -> None:
    endpoint = TokenEndpoint()
    async with serving(endpoint.app()) as base, aiohttp.ClientSession() as session:
        destination_ = oauth2(tmp_path, f"{base}/token")
        credentials = credentials_for(destination_, PLAIN)
        await credentials.headers(session)
        endpoint.secret = "rotated-secret"
        assert destination_.client_secret_file is not None
        secret_file(destination_.client_secret_file, "rotated-secret\n")
        credentials.rejected()
        assert await credentials.headers(session) == {"Authorization": "Bearer tok-2"}
    assert [c.client_auth for c in endpoint.calls] == ["basic", "basic"]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("not-json", "without a JSON object"),
        ("no-token", "without a usable access_token"),
        ("mac", "of type 'mac', not Bearer"),
        ("error", "refused (HTTP 400, error invalid_scope)"),
        ("huge", "answered more than 65536 bytes"),
        ("redirect", "answered HTTP 302"),
    ],
)
async def test_oauth2_bad_answers_give_a_plain_reason_without_secrets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, answer: str, reason: str
) -> None:
    endpoint = TokenEndpoint(answer=answer)
    with caplog.at_level(logging.DEBUG):
        async with serving(endpoint.app()) as base, aiohttp.ClientSession() as session:
            credentials = credentials_for(oauth2(tmp_path, f"{base}/token"), PLAIN)
            with pytest.raises(AuthError) as caught:
                await credentials.headers(session)
    message = str(caught.value)
    assert reason in message
    assert message.startswith("the token endpoint 127.0.0.1:")
    for secret in (CLIENT_SECRET, "mac-token-1", "maintenance"):
        assert secret not in message
        assert secret not in caplog.text
    assert len(endpoint.calls) == 1  # the redirect is not followed


async def test_oauth2_wrong_secret_is_refused_both_ways_without_echo(tmp_path: Path) -> None:
    endpoint = TokenEndpoint(secret="the-right-one")
    async with serving(endpoint.app()) as base, aiohttp.ClientSession() as session:
        credentials = credentials_for(oauth2(tmp_path, f"{base}/token"), PLAIN)
        with pytest.raises(AuthError) as caught:
            await credentials.headers(session)
    assert "refused (HTTP 401, error invalid_client)" in str(caught.value)
    assert "the-right-one" not in str(caught.value)
    assert CLIENT_SECRET not in str(caught.value)
    assert [c.client_auth for c in endpoint.calls] == ["none", "none"]


async def test_oauth2_unreachable_or_silent_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(web.Application()) as base:
        pass  # the port is closed again
    credentials = credentials_for(oauth2(tmp_path, f"{base}/token"), PLAIN)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(AuthError, match="cannot be reached"):
            await credentials.headers(session)

    monkeypatch.setattr(http_auth, "TOKEN_TIMEOUT", 0.3)
    endpoint = TokenEndpoint(answer="slow")
    async with serving(endpoint.app()) as base, aiohttp.ClientSession() as session:
        credentials = credentials_for(oauth2(tmp_path, f"{base}/token"), PLAIN)
        with pytest.raises(AuthError, match="did not answer in 0 s"):
            await credentials.headers(session)
        # Requests waiting for that fetch share its failure instead of each waiting in turn.
        results = await asyncio.gather(
            *(credentials.headers(session) for _ in range(4)), return_exceptions=True
        )
        assert all(isinstance(r, AuthError) for r in results)
    assert len(endpoint.calls) == 2


async def test_oauth2_missing_secret_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    credentials = credentials_for(
        destination(
            auth="oauth2",
            token_url="http://127.0.0.1:9/token",
            client_id=CLIENT_ID,
            client_secret_file=str(missing),
        ),
        PLAIN,
    )
    async with aiohttp.ClientSession() as session:
        with pytest.raises(AuthError, match=f"the client secret file {missing} does not exist"):
            await credentials.headers(session)


# -- TLS ------------------------------------------------------------------------------


async def _get(url: str, context: Any) -> int:
    async with aiohttp.ClientSession() as session, session.get(url, ssl=context) as r:
        return r.status


async def test_tls_server_is_trusted_with_tls_ca_and_refused_without(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", hello)
    async with serving(app, ssl_context=server_tls(tls.server_cert, tls.server_key)) as base:
        assert await _get(base, client_ssl_context(tls.ca)) == 200
        with pytest.raises(aiohttp.ClientConnectorCertificateError) as caught:
            await _get(base, client_ssl_context(None))
        assert certificate_problem(caught.value) == (
            "the certificate of 127.0.0.1 is not signed by a trusted CA (set tls_ca)"
        )
    # The same certificate on an address it was not issued for: refused, CA or not.
    async with serving(
        app, host="127.0.0.2", ssl_context=server_tls(tls.server_cert, tls.server_key)
    ) as other:
        with pytest.raises(aiohttp.ClientConnectorCertificateError) as caught:
            await _get(other, client_ssl_context(tls.ca))
        assert certificate_problem(caught.value) == (
            "the certificate of 127.0.0.2 is not issued for that name or address"
        )


async def test_expired_certificate_is_named_as_such(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    folder = tls.ca.parent
    (folder / "old.ext").write_text("subjectAltName=IP:127.0.0.1\n", encoding="ascii")
    for args in (
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "old.key", "-out", "old.csr",
         "-subj", "/CN=old"],
        ["x509", "-req", "-in", "old.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-days", "0", "-out", "old.pem", "-extfile", "old.ext"],
    ):  # fmt: skip
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)
    await asyncio.sleep(1.1)  # valid until the second it was made

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", hello)
    server = server_tls(folder / "old.pem", folder / "old.key")
    async with serving(app, ssl_context=server) as base:
        with pytest.raises(aiohttp.ClientConnectorCertificateError) as caught:
            await _get(base, client_ssl_context(tls.ca))
    assert certificate_problem(caught.value) == "the certificate of 127.0.0.1 has expired"


async def test_oauth2_over_https_uses_the_destination_context(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    endpoint = TokenEndpoint()
    server = server_tls(tls.server_cert, tls.server_key)
    async with serving(endpoint.app(), ssl_context=server) as base, aiohttp.ClientSession() as s:
        trusted = credentials_for(oauth2(tmp_path, f"{base}/token"), client_ssl_context(tls.ca))
        assert await trusted.headers(s) == {"Authorization": "Bearer tok-1"}
        untrusted = credentials_for(oauth2(tmp_path, f"{base}/token"), PLAIN)
        with pytest.raises(AuthError, match="not signed by a trusted CA"):
            await untrusted.headers(s)
    assert len(endpoint.calls) == 1  # the secret never went to the untrusted server


def test_tls_ca_that_cannot_be_used_is_a_plain_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(AuthError, match=f"the CA file {missing} does not exist"):
        client_ssl_context(missing)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n", encoding="ascii")
    with pytest.raises(AuthError, match="holds no PEM certificate"):
        client_ssl_context(garbage)
    context = client_ssl_context(None)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
