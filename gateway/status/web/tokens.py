"""API tokens of the integration API: names and SHA-256 hashes in one JSON file.

Rules and decisions:

* A token is ``secrets.token_urlsafe(32)``: 256 random bits, shown once by
  ``dermgate token add`` and never stored. The file keeps its SHA-256 only.
* Hash: plain SHA-256, no salt, no slow function. Password hashes are slow
  (:mod:`.users`) because people choose guessable passwords; a 256-bit random token
  cannot be guessed or found in a dictionary however fast the hash, so a slow hash
  would only make every API request cost a Pi-class box ~0.1 s and 32 MiB for
  nothing. A stolen file still gives no token (a preimage of SHA-256 is out of reach).
* Checking a token hashes it once and compares that digest with every entry's
  in constant time (``hmac.compare_digest``), never stopping at the first match:
  the time does not tell how much of a digest matched, nor which entry.
* Names are 1-32 letters, digits, ``_`` or ``-`` (they appear in audit lines and as
  the actor ``token:NAME``).
* The file (``{"version": 1, "tokens": {NAME: {"sha256": HEX, "created": ISO}}}``) is
  written atomically (temporary file, fsync, rename) with mode 0600. Written by root
  for a service that runs as another user, it is handed to that user before it
  appears (see :mod:`gateway.core.state_owner`).
* A damaged file is refused as a whole with a message that names the file and the
  kind of damage, never its content (:class:`TokensError`).
* The running service reads the file again whenever it changes
  (:class:`TokenFile`), so a removed token stops working without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.status.web.table_file import read_table, write_table, write_table_for_service

log = logging.getLogger(__name__)

TOKENS_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")
_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
#: The longest token accepted for checking (a generated one has 43 characters).
MAX_TOKEN_LENGTH = 256


class TokensError(Exception):
    """The tokens file cannot be read or written; the message says why."""


class TokenExists(TokensError):
    """``add`` without ``replace`` for a name that has a token already."""


def check_token_name(name: str) -> str:
    """A valid token name or :class:`ValueError`."""
    if not _NAME.match(name):
        raise ValueError("a token name has 1-32 letters, digits, '_' or '-'")
    return name


def token_digest(token: str) -> str:
    """The SHA-256 (hex) the file keeps for ``token``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _record_ok(record: object) -> bool:
    return (
        isinstance(record, dict)
        and isinstance(record.get("sha256"), str)
        and bool(_HEX.match(record["sha256"]))
        and isinstance(record.get("created"), str)
        and bool(_STAMP.match(record["created"]))
    )


@dataclass
class Tokens:
    """The tokens file's content."""

    tokens: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, path: Path) -> Tokens:
        """Read ``path``; a missing file is no tokens. Raises :class:`TokensError`."""
        return cls(
            read_table(
                path,
                what="API tokens file",
                version=TOKENS_VERSION,
                table="tokens",
                name=_NAME,
                record_ok=_record_ok,
                error=TokensError,
            )
        )

    def save(self, path: Path, owner: tuple[int, int] | None = None) -> None:
        """Write atomically with mode 0600 (folder created 0700 if missing); with
        ``owner`` (uid, gid) the file belongs to them before it appears."""
        write_table(path, version=TOKENS_VERSION, table="tokens", records=self.tokens, owner=owner)

    def save_for_service(self, path: Path, state_dir: Path) -> None:
        """:meth:`save` as a command does it: run as root, the file and the folders
        it creates under ``state_dir`` get ``state_dir``'s owner and group."""
        write_table_for_service(path, state_dir, lambda owner: self.save(path, owner))

    def names(self) -> list[str]:
        """The token names, sorted."""
        return sorted(self.tokens)

    def created(self, name: str) -> str:
        """When ``name``'s token was made (``YYYY-MM-DDTHH:MM:SSZ``)."""
        return str(self.tokens[name]["created"])

    def add(self, name: str, *, replace: bool = False, now: datetime | None = None) -> str:
        """A new token for ``name``; returns it (the only time it is seen).

        Raises :class:`TokenExists` if ``name`` has one and not ``replace``."""
        check_token_name(name)
        if name in self.tokens and not replace:
            raise TokenExists(f"a token named {name} exists already")
        token = secrets.token_urlsafe(32)
        stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.tokens[name] = {"sha256": token_digest(token), "created": stamp}
        return token

    def remove(self, name: str) -> bool:
        """Remove ``name``'s token; False if there is none."""
        return self.tokens.pop(name, None) is not None

    def match(self, token: str) -> str | None:
        """The name whose token ``token`` is, else None (constant time per entry,
        every entry compared)."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        digest = token_digest(token).encode("ascii")
        found: str | None = None
        for name, record in self.tokens.items():
            if hmac.compare_digest(digest, str(record["sha256"]).encode("ascii")):
                found = name
        return found


def tokens_file_problem(path: Path) -> str | None:
    """What is wrong with the tokens file at ``path`` (None: usable or absent)."""
    try:
        Tokens.load(path)
    except TokensError as err:
        return str(err)
    return None


_Stamp = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TokensUnreadable:
    """The tokens file exists but cannot be used; ``detail`` names the file (for the log)."""

    detail: str


class TokenFile:
    """The tokens file as the running service sees it: read again whenever its
    identity (device, inode, size, mtime, ctime) changes, as :mod:`.logins` does for
    the users file. One ``stat`` per check; a problem is logged once per change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: _Stamp | None = None
        self._current: Tokens | TokensUnreadable = Tokens({})

    def current(self) -> Tokens | TokensUnreadable:
        """The tokens now (a missing file: none)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            stamp: _Stamp = (-1,)
        except OSError as err:
            stamp = (-2, err.errno or 0)
        else:
            stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if stamp != self._stamp:
            before = self._current
            self._stamp = stamp
            try:
                self._current = Tokens.load(self.path)
            except TokensError as err:
                self._current = TokensUnreadable(str(err))
                log.error("%s: API tokens refused until it is fixed", err)
            else:
                if isinstance(before, TokensUnreadable):
                    log.info("API tokens file %s usable again", self.path)
        return self._current
