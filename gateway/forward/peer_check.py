"""Who may send us a storage commitment report: the PACS we asked, nobody else.

A report marks captures COMMITTED, and committed captures are purged, so a report
from anyone else would delete captures the PACS never kept. A report counts only
when the calling AE title is the destination's ``ae_title`` and the peer's address
is one of the destination's ``host`` (a host name is resolved, every address it has
counts) or listed in its ``commitment_from``. Addresses are compared as addresses
(``::ffff:10.0.0.5`` is ``10.0.0.5``), never as strings.

Look-ups block (DNS): call from a worker thread (pynetdicom's), never the event
loop. A host name's addresses are kept for a minute, failures too, so a dead DNS
server costs one slow look-up a minute rather than one per report.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable

from gateway.core.config import DicomDestination

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_CACHE_SECONDS = 60.0


def parse_address(text: str) -> Address | None:
    """An address as reported by a socket (zone id dropped, IPv4-mapped unwrapped)."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0].strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def resolve_host(host: str) -> frozenset[Address]:
    """Every address ``host`` stands for (an address stands for itself); empty if unknown."""
    literal = parse_address(host)
    if literal is not None:
        return frozenset({literal})
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return frozenset()
    found = (parse_address(str(info[4][0])) for info in infos)
    return frozenset(a for a in found if a is not None)


class PeerCheck:
    """Matches a report's sender (AE title, address) against the destinations."""

    def __init__(
        self,
        destinations: Iterable[DicomDestination],
        resolve: Callable[[str], frozenset[Address]] = resolve_host,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._destinations = {d.name: d for d in destinations}
        self._resolve = resolve
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, frozenset[Address]]] = {}

    def _host_addresses(self, host: str) -> frozenset[Address]:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(host)
        if cached is not None and now - cached[0] < _CACHE_SECONDS:
            return cached[1]
        addresses = self._resolve(host)
        with self._lock:
            self._cache[host] = (now, addresses)
        return addresses

    def allowed(self, destination: DicomDestination) -> frozenset[Address]:
        """The addresses ``destination`` may report from."""
        listed = (parse_address(a) for a in destination.commitment_from)
        return self._host_addresses(destination.host) | {a for a in listed if a is not None}

    def matches(self, destination: str, ae_title: str, address: str) -> bool:
        """True if (``ae_title``, ``address``) is the configured ``destination``."""
        dest = self._destinations.get(destination)
        peer = parse_address(address)
        if dest is None or peer is None or ae_title.strip() != dest.ae_title.strip():
            return False
        return peer in self.allowed(dest)

    def any_destination(self, ae_title: str, address: str) -> bool:
        """True if the sender is one of the destinations (which one: see :meth:`matches`)."""
        return any(self.matches(name, ae_title, address) for name in self._destinations)
