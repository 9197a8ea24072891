"""Logins of the local page: names and salted, slow password hashes in one JSON file.

Rules and decisions:

* Hash: scrypt (``hashlib.scrypt``, no extra dependency) with N=2**15, r=8, p=1 and a
  random 16-byte salt per user; about 32 MiB and ~0.1 s per check on a Pi-class box,
  which makes guessing slow while a login stays instant for a person. The parameters
  are stored with each hash, so stronger ones later keep old entries verifiable.
* Comparison in constant time (``hmac.compare_digest``). An unknown user costs the
  same scrypt work as a known one, so timing does not tell which names exist.
* Passwords: at least :data:`MIN_LENGTH` characters, not all one character, not the
  user name; anything else is refused with a plain message (:class:`WeakPassword`).
* The file (``{"version": 1, "users": {NAME: {...}}}``) is written atomically
  (temporary file, fsync, rename) with mode 0600; it never holds a password. Written
  by root for a service that runs as another user, it is handed to that user
  before it appears (see :mod:`gateway.core.state_owner`).
* Each entry has a fingerprint (:meth:`Users.fingerprint`, a digest of its salted
  hash): a session remembers the one it logged in with, so a new password or a
  removed user ends the sessions started before.
* A damaged file is refused as a whole with a message that names the file and
  the kind of damage, never its content (:class:`UsersError`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.status.web.table_file import read_table, write_table, write_table_for_service

USERS_VERSION = 1
MIN_LENGTH = 10
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
_MAXMEM = 128 * 1024 * 1024
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,32}$")


class UsersError(Exception):
    """The users file cannot be read or written; the message says why."""


class WeakPassword(ValueError):
    """The password is refused; the message says what a good one needs."""


def check_name(name: str) -> str:
    """A valid user name or :class:`ValueError`."""
    if not _NAME.match(name):
        raise ValueError("a user name has 1-32 letters, digits, '.', '_' or '-'")
    return name


def check_password(name: str, password: str) -> None:
    """Refuse empty, short or trivial passwords with :class:`WeakPassword`."""
    if not password:
        raise WeakPassword("the password is empty")
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"the password is too short: use at least {MIN_LENGTH} characters")
    if len(set(password)) < 4:
        raise WeakPassword("the password repeats too few characters: use a passphrase")
    if password.lower() == name.lower() or name.lower() in password.lower():
        raise WeakPassword("the password must not contain the user name")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> dict[str, Any]:
    """A new salted scrypt record for ``password``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=_MAXMEM
    )
    return {"scheme": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(salt),
            "hash": _b64(digest)}  # fmt: skip


def _verify_record(record: dict[str, Any], password: str) -> bool:
    salt = base64.b64decode(record["salt"])
    expected = base64.b64decode(record["hash"])
    digest = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=int(record["n"]),
        r=int(record["r"]),
        p=int(record["p"]),
        maxmem=_MAXMEM,
        dklen=len(expected),
    )
    return hmac.compare_digest(digest, expected)


def _record_ok(record: object) -> bool:
    """True if ``record`` has the shape :func:`hash_password` writes."""
    if not isinstance(record, dict) or record.get("scheme") != "scrypt":
        return False
    if not all(isinstance(record.get(k), int) and record[k] > 0 for k in ("n", "r", "p")):
        return False
    try:
        return all(
            isinstance(record.get(k), str) and base64.b64decode(record[k], validate=True)
            for k in ("salt", "hash")
        )
    except (binascii.Error, ValueError):
        return False


def users_file_problem(path: Path) -> str | None:
    """What is wrong with the users file at ``path`` (None: usable or absent)."""
    try:
        Users.load(path)
    except UsersError as err:
        return str(err)
    return None


_DUMMY = {"scheme": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
          "salt": _b64(b"\0" * 16), "hash": _b64(b"\0" * 64)}  # fmt: skip


@dataclass
class Users:
    """The users file's content."""

    users: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, path: Path) -> Users:
        """Read ``path``; a missing file is no users. Raises :class:`UsersError`."""
        return cls(
            read_table(
                path,
                what="users file",
                version=USERS_VERSION,
                table="users",
                name=_NAME,
                record_ok=_record_ok,
                error=UsersError,
            )
        )

    def save(self, path: Path, owner: tuple[int, int] | None = None) -> None:
        """Write atomically with mode 0600 (folder created 0700 if missing); with
        ``owner`` (uid, gid) the file belongs to them before it appears."""
        write_table(path, version=USERS_VERSION, table="users", records=self.users, owner=owner)

    def save_for_service(self, path: Path, state_dir: Path) -> None:
        """:meth:`save` as a command does it: run as root, the file and the folders
        it creates under ``state_dir`` get ``state_dir``'s owner and group, so the
        service (its own user) can read them."""
        write_table_for_service(path, state_dir, lambda owner: self.save(path, owner))

    def names(self) -> list[str]:
        """The user names, sorted."""
        return sorted(self.users)

    def remove(self, name: str) -> bool:
        """Remove ``name``; False if there is no such user."""
        return self.users.pop(name, None) is not None

    def fingerprint(self, name: str) -> str | None:
        """A digest of ``name``'s entry (changes with every new password); None if unknown."""
        record = self.users.get(name)
        if record is None:
            return None
        canonical = json.dumps(record, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]

    def set_password(self, name: str, password: str) -> None:
        """Add ``name`` or replace its password (checked first)."""
        check_name(name)
        check_password(name, password)
        self.users[name] = hash_password(password)

    def verify(self, name: str, password: str) -> bool:
        """True if ``password`` is ``name``'s; same work whether or not ``name`` exists."""
        record = self.users.get(name)
        if record is None:
            _verify_record(_DUMMY, password)
            return False
        try:
            return _verify_record(record, password)
        except (KeyError, ValueError):
            return False
