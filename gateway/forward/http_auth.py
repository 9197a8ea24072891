"""Credentials and TLS for the HTTP requests to a DICOMweb destination.

:func:`credentials_for` turns a destination's ``auth`` keys into an
:class:`HttpCredentials`: the sender asks it for the ``Authorization`` header before
each request (:meth:`~HttpCredentials.headers`) and tells it when the server answered
401/403 (:meth:`~HttpCredentials.rejected`), so that the next request re-reads the
token file or fetches a new OAuth2 token. :func:`client_ssl_context` is the one TLS
context of such a destination: the system's CAs plus the optional ``tls_ca``, and
certificate and host name always verified; :func:`certificate_problem` says in plain
words why a server's certificate was refused.

=========  ==============================================================================
auth       Authorization header
=========  ==============================================================================
none       none
basic      ``Basic`` (RFC 7617): ``username`` + the first line of ``password_file``
           (without its line ending), re-read when the file changes
bearer     ``Bearer`` (RFC 6750): the first line of ``token_file``, stripped, re-read when
           the file changes (inode, size or modification time) or after a rejection
oauth2     ``Bearer`` with a token of the client credentials grant (RFC 6749 §4.4) from
           ``token_url``, cached until shortly before ``expires_in`` runs out, fetched
           again after a rejection; one fetch at a time
=========  ==============================================================================

How the OAuth2 client authenticates (RFC 6749 §2.3.1): with HTTP Basic first (client
id and secret form-encoded, then base64), the method every authorization server must
support (Keycloak's default); if the token endpoint refuses the client (401, or 400
``invalid_client``/``invalid_request``), once more with ``client_id`` and
``client_secret`` in the form body (the form Microsoft Entra ID documents, and what an
Okta or Auth0 client set to ``client_secret_post`` wants), and the method that worked
is tried first from then on. Both in one request is what §2.3 forbids, so it is never
done.

Errors: one type, :class:`AuthError`. It means "this destination cannot be
authenticated now" (a file missing or empty, the token endpoint unreachable, refusing
or answering nonsense): the sender retries later, as for a peer that does not answer,
and never quarantines a capture for it. Its message is a plain reason a technician
can act on; it never carries a token, password or secret, nor the token endpoint's
words (only its RFC 6749 ``error`` code, which is one of a few fixed ASCII words).

Blocking I/O: the secret files are tiny, but a ``stat`` and a read per request still
run in a worker thread (``asyncio.to_thread``); :func:`client_ssl_context` reads the CA
file synchronously, once, when the sender is built.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import ssl
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote_plus, urlsplit

import aiohttp

from gateway.core.config.destinations import DicomwebDestination

__all__ = [
    "AuthError",
    "HttpCredentials",
    "certificate_problem",
    "client_ssl_context",
    "credentials_for",
]

log = logging.getLogger(__name__)

#: Largest secret file read (a JWT is a few kB).
SECRET_FILE_LIMIT = 64 * 1024
#: Largest token endpoint answer read.
TOKEN_ANSWER_LIMIT = 64 * 1024
#: Seconds one token request may take, connection included.
TOKEN_TIMEOUT = 30.0
#: Lifetime assumed when the token endpoint does not say ``expires_in``.
DEFAULT_EXPIRES_IN = 300.0
#: Longest a token is cached, whatever ``expires_in`` says.
MAX_EXPIRES_IN = 86400.0
#: A token is fetched again this long before it expires (at most a fifth of its life),
#: so that a long upload does not start with a token about to run out.
EXPIRY_MARGIN = 60.0

# RFC 6750 §2.1 b64token is stricter; servers issue tokens with other visible ASCII.
_TOKEN = re.compile(r"[\x21-\x7e]{1,16384}")
# RFC 6749 §5.2: error = 1*( %x20-21 / %x23-5B / %x5D-7E ); in practice a short word.
_ERROR_CODE = re.compile(r"[a-z_]{1,40}")


class AuthError(Exception):
    """The destination cannot be authenticated now; the message is a plain reason
    that never carries a secret."""


class HttpCredentials(Protocol):
    """What the STOW-RS sender asks before each request and tells after a refusal."""

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        """The ``Authorization`` header for the next request (empty without auth);
        reads a changed file or fetches a token first when needed. Raises
        :class:`AuthError`."""
        ...

    def rejected(self) -> None:
        """The server answered 401/403: forget the cached token or secret so that the
        next :meth:`headers` re-reads or fetches it."""
        ...


def client_ssl_context(tls_ca: Path | None) -> ssl.SSLContext:
    """A client TLS context trusting the system's CAs plus ``tls_ca`` (PEM), always
    verifying the certificate and the host name. Raises :class:`AuthError` when
    ``tls_ca`` cannot be read or holds no certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if tls_ca is not None:
        try:
            context.load_verify_locations(cafile=os.fspath(tls_ca))
        except FileNotFoundError as err:
            raise AuthError(f"the CA file {tls_ca} does not exist") from err
        except ssl.SSLError as err:  # an OSError too: first
            raise AuthError(f"the CA file {tls_ca} holds no PEM certificate") from err
        except OSError as err:
            raise AuthError(f"the CA file {tls_ca} cannot be read ({err.strerror})") from err
    # create_default_context already says so; stated here because it is the promise.
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    return context


# OpenSSL X509_V_ERR_*: whom the certificate's signer is unknown to, and when it is valid.
_UNTRUSTED = {2, 18, 19, 20, 21}
_EXPIRED, _NOT_YET_VALID, _HOST_MISMATCH, _IP_MISMATCH = 10, 9, 62, 64


def certificate_problem(err: aiohttp.ClientConnectorCertificateError) -> str:
    """What is wrong with the server's certificate, in words a technician can act on
    (OpenSSL's verify result, never anything the server sent)."""
    failure = err.certificate_error
    code = getattr(failure, "verify_code", None)
    if code in (_HOST_MISMATCH, _IP_MISMATCH):
        return f"the certificate of {err.host} is not issued for that name or address"
    if code in _UNTRUSTED:
        return f"the certificate of {err.host} is not signed by a trusted CA (set tls_ca)"
    if code == _EXPIRED:
        return f"the certificate of {err.host} has expired"
    if code == _NOT_YET_VALID:
        return f"the certificate of {err.host} is not valid yet (check the box's clock)"
    detail = getattr(failure, "verify_message", None) or type(failure).__name__
    return f"the certificate of {err.host} was refused ({detail})"


def credentials_for(
    destination: DicomwebDestination, ssl_context: ssl.SSLContext
) -> HttpCredentials:
    """The credentials of ``destination`` (its ``auth`` key); ``ssl_context`` is used
    for the OAuth2 token endpoint."""
    name = destination.name
    match destination.auth:
        case "none":
            return _NoCredentials()
        case "basic":
            assert destination.username is not None
            assert destination.password_file is not None
            return _BasicCredentials(
                destination.username, _FileSecret(destination.password_file, "password file")
            )
        case "bearer":
            assert destination.token_file is not None
            return _BearerFileCredentials(_FileSecret(destination.token_file, "token file"))
        case "oauth2":
            assert destination.token_url is not None
            assert destination.client_id is not None
            assert destination.client_secret_file is not None
            return _OAuth2Credentials(
                name=name,
                token_url=destination.token_url,
                client_id=destination.client_id,
                secret=_FileSecret(destination.client_secret_file, "client secret file"),
                scope=destination.scope,
                ssl_context=ssl_context,
            )


class _NoCredentials:
    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        return {}

    def rejected(self) -> None:
        return None


@dataclass(frozen=True)
class _FileKey:
    """What tells that a file changed: another inode (renamed over), size or mtime."""

    device: int
    inode: int
    size: int
    mtime_ns: int


def _key(st: os.stat_result) -> _FileKey:
    return _FileKey(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read_if_changed(path: Path, known: _FileKey | None) -> tuple[_FileKey, int, bytes | None]:
    """(key, mode, content or None when the key is ``known``); runs in a worker thread."""
    st = os.stat(path)
    if known is not None and _key(st) == known:
        return known, st.st_mode, None
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the open for ever
        raise OSError(0, "not a regular file")
    with open(path, "rb") as file:
        st = os.fstat(file.fileno())
        return _key(st), st.st_mode, file.read(SECRET_FILE_LIMIT + 1)


class _FileSecret:
    """The first line of a small file, read again when the file changes."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._key: _FileKey | None = None
        self._line = ""
        self._warned_mode = False

    def forget(self) -> None:
        """Read the file again next time even if it looks unchanged."""
        self._key = None

    async def first_line(self) -> tuple[str, bool]:
        """(the first line without its line ending, whether it was read anew)."""
        try:
            key, mode, data = await asyncio.to_thread(_read_if_changed, self.path, self._key)
        except FileNotFoundError as err:
            raise AuthError(f"the {self.what} {self.path} does not exist") from err
        except OSError as err:
            reason = err.strerror or type(err).__name__
            raise AuthError(f"the {self.what} {self.path} cannot be read ({reason})") from err
        if data is None:
            return self._line, False
        if mode & 0o077 and not self._warned_mode:
            self._warned_mode = True
            log.warning("the %s %s can be read by other users; chmod 600 it", self.what, self.path)
        if len(data) > SECRET_FILE_LIMIT:
            raise AuthError(f"the {self.what} {self.path} is larger than {SECRET_FILE_LIMIT} bytes")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise AuthError(f"the {self.what} {self.path} is not UTF-8 text") from err
        lines = text.splitlines()
        line = lines[0] if lines else ""
        if not line.strip():
            raise AuthError(f"the {self.what} {self.path} is empty (its first line is blank)")
        self._key, self._line = key, line
        return line, True


class _BasicCredentials:
    def __init__(self, username: str, password: _FileSecret) -> None:
        if ":" in username:  # RFC 7617 §2: the user-id cannot contain a colon
            raise AuthError("the basic auth username cannot contain ':'")
        self._username = username
        self._password = password

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        password, _ = await self._password.first_line()
        return {"Authorization": _basic(self._username, password)}

    def rejected(self) -> None:
        self._password.forget()


def _basic(user: str, password: str) -> str:
    """RFC 7617 with UTF-8, as ``aiohttp.encode_basic_auth`` (aiohttp >= 3.14) builds it."""
    raw = f"{user}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


class _BearerFileCredentials:
    def __init__(self, token: _FileSecret) -> None:
        self._token = token

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        line, fresh = await self._token.first_line()
        token = line.strip()
        if not _TOKEN.fullmatch(token):
            self._token.forget()
            raise AuthError(
                f"the {self._token.what} {self._token.path} holds no bearer token "
                "(spaces or characters outside visible ASCII)"
            )
        if fresh:
            log.info("read the token in %s", self._token.path)
        return {"Authorization": f"Bearer {token}"}

    def rejected(self) -> None:
        self._token.forget()


@dataclass(frozen=True)
class _TokenAnswer:
    status: int
    body: dict[str, object] | None  # the JSON object, or None when the answer was not one


class _OAuth2Credentials:
    """Client credentials grant (RFC 6749 §4.4), token cached until it nearly expires."""

    def __init__(
        self,
        *,
        name: str,
        token_url: str,
        client_id: str,
        secret: _FileSecret,
        scope: str | None,
        ssl_context: ssl.SSLContext,
    ) -> None:
        self._name = name
        self._token_url = token_url
        self._client_id = client_id
        self._secret = secret
        self._scope = scope
        self._ssl = ssl_context
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._valid_until = 0.0
        self._failure: tuple[AuthError, float] | None = None  # the last fetch's error
        self._secret_in_body = False  # client_secret_post worked where Basic did not
        parts = urlsplit(token_url)
        self._where = f"the token endpoint {parts.netloc}{parts.path}"

    def _current(self) -> str | None:
        if self._token is not None and time.monotonic() < self._valid_until:
            return self._token
        return None

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        token = self._current()
        if token is None:
            asked = time.monotonic()
            async with self._lock:  # one fetch at a time; the others use its outcome
                token = self._current()
                if token is None:
                    if self._failure is not None and self._failure[1] >= asked:
                        raise AuthError(str(self._failure[0]))
                    try:
                        token = await self._fetch(session)
                    except AuthError as err:
                        self._failure = (err, time.monotonic())
                        raise
        return {"Authorization": f"Bearer {token}"}

    def rejected(self) -> None:
        self._token = None

    async def _fetch(self, session: aiohttp.ClientSession) -> str:
        secret, _ = await self._secret.first_line()
        secret = secret.strip()
        order = (True, False) if self._secret_in_body else (False, True)
        answer = await self._request(session, secret, in_body=order[0])
        if _client_refused(answer):
            second = await self._request(session, secret, in_body=order[1])
            if 200 <= second.status < 300:
                self._secret_in_body = order[1]
                log.info(
                    "destination %s: %s takes the client secret %s",
                    self._name,
                    self._where,
                    "in the form body" if order[1] else "as HTTP Basic",
                )
            answer = second
        token, lifetime = self._token_from(answer)
        margin = min(EXPIRY_MARGIN, lifetime / 5)
        self._token = token
        self._valid_until = time.monotonic() + lifetime - margin
        log.debug("destination %s: token fetched, valid for %.0f s", self._name, lifetime)
        return token

    async def _request(
        self, session: aiohttp.ClientSession, secret: str, *, in_body: bool
    ) -> _TokenAnswer:
        form = {"grant_type": "client_credentials"}
        headers = {"Accept": "application/json"}
        if in_body:
            form |= {"client_id": self._client_id, "client_secret": secret}
        else:  # RFC 6749 §2.3.1: each part form-encoded before the Basic encoding
            headers["Authorization"] = _basic(quote_plus(self._client_id), quote_plus(secret))
        if self._scope:
            form["scope"] = self._scope
        try:
            async with (
                asyncio.timeout(TOKEN_TIMEOUT),
                session.post(
                    self._token_url,
                    data=form,
                    headers=headers,
                    ssl=self._ssl,
                    allow_redirects=False,
                ) as response,
            ):
                body = await _read_bounded(response, self._where)
                status = response.status
        except TimeoutError as err:
            raise AuthError(f"{self._where} did not answer in {TOKEN_TIMEOUT:.0f} s") from err
        except aiohttp.ClientConnectorCertificateError as err:
            raise AuthError(f"{self._where}: {certificate_problem(err)}") from err
        except aiohttp.ClientError as err:
            raise AuthError(f"{self._where} cannot be reached ({type(err).__name__})") from err
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        return _TokenAnswer(status, parsed if isinstance(parsed, dict) else None)

    def _token_from(self, answer: _TokenAnswer) -> tuple[str, float]:
        """The access token and its lifetime in seconds, or :class:`AuthError`."""
        body = answer.body
        if not 200 <= answer.status < 300:
            code = body.get("error") if body is not None else None
            if isinstance(code, str) and _ERROR_CODE.fullmatch(code):
                raise AuthError(f"{self._where} refused (HTTP {answer.status}, error {code})")
            raise AuthError(f"{self._where} answered HTTP {answer.status}")
        if body is None:
            raise AuthError(f"{self._where} answered without a JSON object")
        token = body.get("access_token")
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise AuthError(f"{self._where} answered without a usable access_token")
        token_type = body.get("token_type")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            shown = token_type if isinstance(token_type, str) and len(token_type) < 20 else "?"
            raise AuthError(f"{self._where} gave a token of type {shown!r}, not Bearer")
        return token, _lifetime(body.get("expires_in"), self._where)


def _client_refused(answer: _TokenAnswer) -> bool:
    """Whether the answer refuses the client's authentication (RFC 6749 §5.2), not the
    grant or the scope: a server that ignores the Basic header misses a client_id."""
    if answer.status == 401:
        return True
    code = answer.body.get("error") if answer.body is not None else None
    return answer.status == 400 and code in ("invalid_client", "invalid_request")


def _lifetime(value: object, where: str) -> float:
    """``expires_in`` in seconds: a number (or a numeric string, as some servers send);
    absent means :data:`DEFAULT_EXPIRES_IN`."""
    if value is None:
        return DEFAULT_EXPIRES_IN
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            value = None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise AuthError(f"{where} gave an expires_in that is not a number")
    return min(max(float(value), 0.0), MAX_EXPIRES_IN)


async def _read_bounded(response: aiohttp.ClientResponse, where: str) -> bytes:
    """The answer's body, refused past :data:`TOKEN_ANSWER_LIMIT` bytes."""
    too_big = f"{where} answered more than {TOKEN_ANSWER_LIMIT} bytes"
    if response.content_length is not None and response.content_length > TOKEN_ANSWER_LIMIT:
        raise AuthError(too_big)
    body = bytearray()
    async for chunk in response.content.iter_chunked(16384):
        body += chunk
        if len(body) > TOKEN_ANSWER_LIMIT:
            raise AuthError(too_big)
    return bytes(body)
