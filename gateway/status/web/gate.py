"""The page's front door: it accepts connections itself and keeps them bounded.

A stranger on the clinic network must not be able to take the descriptors the
devices, the spool and the PACS need. So, before aiohttp sees a connection:

- **Caps**: at most ``max_connections`` connections at once (default: a quarter of
  the process's ``RLIMIT_NOFILE`` soft limit, at most 256) and
  ``max_connections_per_client`` from one client address (32). A connection past a
  cap is accepted and closed at once (a reset), so it never waits in the kernel's
  queue nor holds a descriptor.
- **One deadline per request**: a new or idle connection has ``request_timeout``
  seconds to finish the TLS handshake and send a complete request, head and body
  (:meth:`Connection.request_started` is called once the body is in); then it is
  closed. While a handler runs the deadline is :data:`HANDLER_LIMIT`; a live
  ``/events`` stream has none (its writes are bounded by the page).
- **Plain HTTP on the TLS port**: the first byte of a TLS connection is 0x16 (a
  handshake record). Anything else is read as an HTTP request and answered with a
  ``301`` to the same path over ``https://`` (before TLS is started on the socket),
  instead of the empty reply a TLS server gives.
- **Quiet logs**: every refusal is counted per :class:`Condition`, logged once when
  it starts, then as one count per condition at most every :data:`REPORT_PERIOD`
  seconds, and once when it ends: never a line (or a traceback) per socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import logging
import re
import resource
import socket
import ssl
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

#: The most a handler (not a live stream) may hold its connection.
HANDLER_LIMIT = 300.0
#: Seconds between two log lines about one condition.
REPORT_PERIOD = 60.0
#: The page's connections by default: a quarter of the descriptors, at most this.
DEFAULT_MAX_CONNECTIONS = 256
_TLS_HANDSHAKE = 0x16
_PLAIN_REQUEST_MAX = 8192
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_HOST = re.compile(r"(?P<name>[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")
_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@/%?-]{0,2000}")


class Condition(enum.Enum):
    """Why the page dropped or refused connections (logged per condition, not per socket)."""

    TOTAL_CAP = "connection cap of the page reached: new connections are closed at once"
    CLIENT_CAP = "a client reached its connection cap: its further connections are closed"
    TIMED_OUT = "connections closed: no complete request within request_timeout"
    TLS_FAILED = "connections closed: the TLS handshake failed"
    PLAIN_HTTP = "plain HTTP on the TLS port: answered with a redirect to https"
    NO_DESCRIPTORS = "cannot accept connections: the process is out of file descriptors"
    EVENT_STREAMS = "live overview streams refused: too many open (429)"

    @property
    def level(self) -> int:
        """How loud: refusals of legitimate-looking clients warn, the rest informs."""
        quiet = (Condition.TIMED_OUT, Condition.TLS_FAILED, Condition.PLAIN_HTTP)
        return logging.INFO if self in quiet else logging.WARNING


@dataclass
class _Tally:
    count: int = 0


@dataclass
class ConditionLog:
    """Counts refusals per :class:`Condition`: the first is logged at once (with its
    detail), then one count per condition and period, and one line when a period
    passes without any."""

    _active: dict[Condition, _Tally] = field(default_factory=dict)

    def note(self, condition: Condition, detail: str = "") -> None:
        """One more refusal for ``condition``."""
        tally = self._active.get(condition)
        if tally is None:
            self._active[condition] = _Tally()
            log.log(
                condition.level, "page: %s%s", condition.value, f" ({detail})" if detail else ""
            )
        else:
            tally.count += 1

    def report(self) -> None:
        """Log what happened since the last report (call every :data:`REPORT_PERIOD`)."""
        for condition, tally in list(self._active.items()):
            if tally.count:
                log.log(
                    condition.level,
                    "page: %d more in the last %.0f s: %s",
                    tally.count,
                    REPORT_PERIOD,
                    condition.value,
                )
                tally.count = 0
            else:
                del self._active[condition]
                log.info("page: over: %s", condition.value)


def default_max_connections() -> int:
    """A quarter of the soft ``RLIMIT_NOFILE`` (at most :data:`DEFAULT_MAX_CONNECTIONS`)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CONNECTIONS
    return max(4, min(DEFAULT_MAX_CONNECTIONS, soft // 4))


@dataclass(frozen=True)
class Limits:
    """What one client and all of them together may hold."""

    max_connections: int
    per_client: int
    request_timeout: float


class Connection:
    """One accepted connection: its client, its deadline, its transport once made."""

    def __init__(self, gate: Gate, client: str) -> None:
        self.gate = gate
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.handler: RequestHandler | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._released = False
        self.expired = False

    def _arm(self, seconds: float | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if seconds is not None and not self._released:
            self._deadline = asyncio.get_running_loop().call_later(seconds, self._expire)

    def _expire(self) -> None:
        self._deadline = None
        self.expired = True
        self.gate.conditions.note(Condition.TIMED_OUT, f"from {self.client}")
        if self.transport is not None:
            self.transport.abort()
        elif self.task is not None:
            self.task.cancel()

    def waiting(self) -> None:
        """Idle or reading a request: ``request_timeout`` from now."""
        self._arm(self.gate.limits.request_timeout)

    def request_started(self, *, stream: bool = False) -> None:
        """The request is in (head and body): the handler runs, or a live stream."""
        self._arm(None if stream else HANDLER_LIMIT)

    def release(self) -> None:
        """The connection is gone: give back its slot (once)."""
        if self._released:
            return
        self._released = True
        self._arm(None)
        self.gate.forget(self)


class _Guarded(asyncio.Protocol):
    """aiohttp's request handler behind a connection whose slot is given back
    when it closes."""

    def __init__(self, connection: Connection, handler: RequestHandler) -> None:
        self.connection = connection
        self.handler = handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.connection.transport = transport
        self.connection.handler = self.handler
        self.connection.gate.by_handler[self.handler] = self.connection
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.handler.data_received(data)

    def eof_received(self) -> bool | None:
        self.handler.eof_received()
        return None

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.handler.connection_lost(exc)
        finally:
            self.connection.release()


def _reset(sock: socket.socket) -> None:
    """Close at once with a reset: no FIN_WAIT/TIME_WAIT kept for a refused peer."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def listen_sockets(host: str, port: int, backlog: int = 128) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for ``host:port`` (every address it names)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[object, ...]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as err:
                raise OSError(
                    err.errno, f"cannot listen on {host}:{port} for the page: {err.strerror}"
                ) from err
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Gate:
    """Accepts the page's connections, bounded (see the module docstring), and hands
    each to aiohttp's request handler (over TLS when ``tls`` is given)."""

    def __init__(
        self,
        handler_factory: Callable[[], RequestHandler],
        limits: Limits,
        tls: ssl.SSLContext | None,
        conditions: ConditionLog,
    ) -> None:
        self.handler_factory = handler_factory
        self.limits = limits
        self.tls = tls
        self.conditions = conditions
        self.by_handler: dict[RequestHandler, Connection] = {}
        self._connections: set[Connection] = set()
        self._per_client: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def open_connections(self) -> int:
        """Connections held now."""
        return len(self._connections)

    def connection_of(self, handler: object) -> Connection | None:
        """The connection a request arrived on (``request.protocol``)."""
        return self.by_handler.get(handler) if isinstance(handler, RequestHandler) else None

    def forget(self, connection: Connection) -> None:
        """Give back a connection's slots (called once, by :meth:`Connection.release`)."""
        self._connections.discard(connection)
        self._per_client[connection.client] -= 1
        if self._per_client[connection.client] <= 0:
            del self._per_client[connection.client]
        if connection.handler is not None:
            self.by_handler.pop(connection.handler, None)

    async def serve(self, listeners: list[socket.socket]) -> None:
        """Accept on ``listeners`` until cancelled; then close every connection."""
        try:
            async with asyncio.TaskGroup() as group:
                for listener in listeners:
                    group.create_task(self._accept(listener))
                group.create_task(self._report())
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for listener in listeners:
                listener.close()

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(REPORT_PERIOD)
            self.conditions.report()

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except OSError as err:
                if err.errno in _OUT_OF_DESCRIPTORS:
                    self.conditions.note(Condition.NO_DESCRIPTORS)
                    await asyncio.sleep(0.5)
                continue  # ECONNABORTED and the like: the peer is gone already
            client = str(address[0])
            if len(self._connections) >= self.limits.max_connections:
                self.conditions.note(
                    Condition.TOTAL_CAP, f"{self.limits.max_connections} connections"
                )
                _reset(sock)
                continue
            if self._per_client[client] >= self.limits.per_client:
                self.conditions.note(
                    Condition.CLIENT_CAP, f"{client}: {self.limits.per_client} connections"
                )
                _reset(sock)
                continue
            connection = Connection(self, client)
            self._connections.add(connection)
            self._per_client[client] += 1
            task = asyncio.create_task(self._open(connection, sock))
            connection.task = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _open(self, connection: Connection, sock: socket.socket) -> None:
        """Hand the socket to aiohttp (after TLS, or a redirect for plain HTTP)."""
        loop = asyncio.get_running_loop()
        handed = made = False
        connection.waiting()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                first = await _first_byte(sock)
                if first is None:
                    return
                if first != _TLS_HANDSHAKE:
                    self.conditions.note(Condition.PLAIN_HTTP, f"from {connection.client}")
                    await _redirect(sock)
                    return
            handler = self.handler_factory()
            handed = True  # from here the transport owns the socket
            await loop.connect_accepted_socket(
                lambda: _Guarded(connection, handler),
                sock,
                ssl=self.tls,
                ssl_handshake_timeout=self.limits.request_timeout if self.tls else None,
            )
            made = True  # from here _Guarded gives the slot back
        except asyncio.CancelledError:
            if not connection.expired:
                raise  # the page stops
        except (ssl.SSLError, ConnectionError):
            if self.tls is not None:
                self.conditions.note(Condition.TLS_FAILED, f"from {connection.client}")
        except (OSError, TimeoutError):
            pass  # the client left, or its handshake ran out of time
        finally:
            if not made:
                if not handed:
                    _reset(sock)
                connection.release()


async def _first_byte(sock: socket.socket) -> int | None:
    """The first byte the client sent, left in the socket; None if it left."""
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await readable
    finally:
        loop.remove_reader(sock.fileno())
    try:
        peeked = sock.recv(1, socket.MSG_PEEK)
    except OSError:
        return None
    return peeked[0] if peeked else None


def _location(head: bytes, sock: socket.socket) -> str:
    """``https://`` + the host the client asked for (or our address) + its path."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    path = parts[1] if len(parts) == 3 and _PATH.fullmatch(parts[1]) else "/"
    local = sock.getsockname()
    name = f"[{local[0]}]" if sock.family == socket.AF_INET6 else str(local[0])
    for line in lines[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == "host":
            found = _HOST.fullmatch(value.strip())
            if found:
                name = found.group("name")
            break
    return f"https://{name}:{local[1]}{path}"


async def _redirect(sock: socket.socket) -> None:
    """Read a plain HTTP request head; answer 301 to the same path over https."""
    loop = asyncio.get_running_loop()
    head = b""
    while b"\r\n\r\n" not in head and len(head) < _PLAIN_REQUEST_MAX:
        chunk = await loop.sock_recv(sock, _PLAIN_REQUEST_MAX - len(head))
        if not chunk:
            break
        head += chunk
    if not re.match(rb"[A-Z]{3,10} \S+ HTTP/1\.[01]\r\n", head):
        return  # not HTTP either: just close
    location = _location(head.split(b"\r\n\r\n", 1)[0], sock)
    body = f"This page is served over HTTPS: {location}\n".encode()
    answer = (
        f"HTTP/1.1 301 Moved Permanently\r\nLocation: {location}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    await loop.sock_sendall(sock, answer)
    sock.shutdown(socket.SHUT_WR)
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(2):
            while await loop.sock_recv(sock, 4096):
                pass
