"""Sessions, CSRF tokens and login lockout of the local page.

Rules:

* A session is a 32-byte random token in the ``dermgate_session`` cookie
  (HttpOnly, SameSite=Strict, Path=/, Secure when the page is served over TLS).
  Sessions live in memory only: a restart logs everybody out, and a stolen users
  file gives no session. They end at logout, after ``session_lifetime``, and as
  soon as their user gets a new password or is removed (each session keeps the
  fingerprint of the users-file entry it logged in with; :meth:`Sessions.retain`).
* Every state-changing request (POST) carries the session's CSRF token in the form
  field ``csrf``; compared in constant time. The login form itself carries a token
  bound to a pre-login cookie (``dermgate_login``), so a foreign site cannot log a
  browser into an account of its choosing.
* Lockout: ``lockout_failures`` failed logins within ``lockout_window`` seconds,
  counted per user name and per client address, refuse further attempts (even
  with the right password) for ``lockout_duration`` seconds. The message says so
  plainly and for how long; it never says whether the user name exists.
* An attempt counts the moment it starts, before its slow password hash runs
  (:meth:`Lockout.begin`): attempts still being checked count against the limit
  as if they had failed, so a burst of parallel guesses gets no more than
  ``lockout_failures`` checks. A success frees its place and clears the count.
"""

from __future__ import annotations

import collections
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SESSION_COOKIE = "dermgate_session"
LOGIN_COOKIE = "dermgate_login"


@dataclass(slots=True)
class Session:
    """One logged-in browser."""

    user: str
    csrf: str
    expires: float
    fingerprint: str = ""


@dataclass
class Sessions:
    """The logged-in browsers, by token."""

    lifetime: float
    _by_token: dict[str, Session] = field(default_factory=dict)

    def create(
        self, user: str, now: float | None = None, fingerprint: str = ""
    ) -> tuple[str, Session]:
        """A new session for ``user``; returns (cookie token, session)."""
        now = time.time() if now is None else now
        self._expire(now)
        token = secrets.token_urlsafe(32)
        session = Session(user, secrets.token_urlsafe(32), now + self.lifetime, fingerprint)
        self._by_token[token] = session
        return token, session

    def get(self, token: str | None, now: float | None = None) -> Session | None:
        """The live session of ``token``, if any."""
        if not token:
            return None
        now = time.time() if now is None else now
        session = self._by_token.get(token)
        if session is None:
            return None
        if session.expires <= now:
            del self._by_token[token]
            return None
        return session

    def end(self, token: str | None) -> None:
        """Log out."""
        if token:
            self._by_token.pop(token, None)

    def retain(self, keep: Callable[[Session], bool]) -> list[str]:
        """End every session ``keep`` refuses; return their users (one per session)."""
        ended = [(t, s.user) for t, s in self._by_token.items() if not keep(s)]
        for token, _ in ended:
            del self._by_token[token]
        return [user for _, user in ended]

    def _expire(self, now: float) -> None:
        for token in [t for t, s in self._by_token.items() if s.expires <= now]:
            del self._by_token[token]


def same_token(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a submitted token."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


@dataclass
class Lockout:
    """Failed-login counting per key (``user:NAME`` and ``addr:IP``)."""

    failures: int
    window: float
    duration: float
    _failed: dict[str, collections.deque[float]] = field(default_factory=dict)
    _locked_until: dict[str, float] = field(default_factory=dict)
    _checking: dict[str, int] = field(default_factory=dict)

    def locked(self, keys: list[str], now: float | None = None) -> float:
        """Seconds left of the longest lockout among ``keys`` (0: not locked)."""
        now = time.time() if now is None else now
        left = 0.0
        for key in keys:
            until = self._locked_until.get(key, 0.0)
            if until > now:
                left = max(left, until - now)
            elif key in self._locked_until:
                del self._locked_until[key]
        return left

    def begin(self, keys: list[str], now: float | None = None) -> LoginAttempt:
        """Reserve a place for one attempt before its password is checked.

        Refused (``attempt.admitted`` false) when a key is locked, or when its
        recent failures plus the attempts still being checked reach the limit.
        An admitted attempt is handed back with :meth:`release` once its password
        has been checked, then counted with :meth:`fail` or :meth:`succeed`
        (without an ``await`` in between, so no other attempt sees the gap).
        """
        now = time.time() if now is None else now
        left = self.locked(keys, now)
        if left:
            return LoginAttempt(keys, admitted=False, locked_for=left)
        for key in keys:
            times = self._failed.get(key)
            recent = 0 if times is None else sum(1 for t in times if t > now - self.window)
            if recent + self._checking.get(key, 0) >= self.failures:
                return LoginAttempt(keys, admitted=False, locked_for=0.0)
        for key in keys:
            self._checking[key] = self._checking.get(key, 0) + 1
        return LoginAttempt(keys, admitted=True, locked_for=0.0)

    def release(self, attempt: LoginAttempt) -> None:
        """Free an admitted attempt's place (once; later calls do nothing)."""
        if not attempt.admitted or attempt.ended:
            return
        attempt.ended = True
        for key in attempt.keys:
            left = self._checking.get(key, 0) - 1
            if left > 0:
                self._checking[key] = left
            else:
                self._checking.pop(key, None)

    def fail(self, keys: list[str], now: float | None = None) -> bool:
        """Count a failed login against every key; lock those that reach the limit.

        Returns True when this failure started a lockout.
        """
        now = time.time() if now is None else now
        started = False
        for key in keys:
            times = self._failed.setdefault(key, collections.deque())
            times.append(now)
            while times and times[0] <= now - self.window:
                times.popleft()
            if len(times) >= self.failures:
                started = started or self._locked_until.get(key, 0.0) <= now
                self._locked_until[key] = now + self.duration
                times.clear()
        if len(self._failed) > 10000:  # bounded memory against a flood of names
            for key in [k for k, v in self._failed.items() if not v][:5000]:
                del self._failed[key]
        return started

    def succeed(self, keys: list[str]) -> None:
        """A good login clears the counts of its keys."""
        for key in keys:
            self._failed.pop(key, None)


@dataclass(slots=True)
class LoginAttempt:
    """One login attempt's place in the :class:`Lockout` counts.

    ``locked_for``: seconds of lockout left when refused because of a lockout;
    0 when refused because too many attempts are being checked at once.
    """

    keys: list[str]
    admitted: bool
    locked_for: float
    ended: bool = False
