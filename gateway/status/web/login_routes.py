"""The local page's login and logout (``/login``, ``/logout``): see :mod:`.server`.

The login form's CSRF token is bound to a pre-login cookie; a login passes the
lockout (per user name and per client address) before the slow password check,
and starts a session whose cookie is HttpOnly, SameSite=Strict (and Secure over
TLS).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets

from aiohttp import web

from gateway.status.web import pages
from gateway.status.web.auth import LOGIN_COOKIE, SESSION_COOKIE, same_token
from gateway.status.web.logins import Unavailable
from gateway.status.web.page_state import PageState, _html, log


class LoginRoutes(PageState):
    """Logging in and out."""

    def _login_token(self, nonce: str) -> str:
        return hmac.new(self._login_key, nonce.encode(), hashlib.sha256).hexdigest()

    def _login_response(
        self, request: web.Request, message: str = "", status: int = 200
    ) -> web.Response:
        # Keep a nonce the browser already has: a second login page (another tab, a
        # redirected favicon request) must not invalidate the form on screen.
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not re.fullmatch(r"[A-Za-z0-9_-]{32}", nonce):
            nonce = secrets.token_urlsafe(24)
        response = _html(pages.login_page(self._login_token(nonce), message), status)
        response.set_cookie(
            LOGIN_COOKIE,
            nonce,
            httponly=True,
            samesite="Strict",
            secure=self.tls,
            path="/login",
            max_age=3600,
        )
        return response

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        """The login page (or the overview when already logged in)."""
        users = self._users()
        if isinstance(users, Unavailable):
            return self._unavailable(users)
        if self.sessions.get(request.cookies.get(SESSION_COOKIE)) is not None:
            raise web.HTTPSeeOther("/")
        return self._login_response(request)

    def _refused_login(self, request: web.Request, locked_for: float) -> web.Response:
        if locked_for:
            minutes = max(1, round(locked_for / 60))
            text = (
                f"Too many failed logins. Logins are blocked for {minutes} more minute(s); "
                "wait, then try again."
            )
        else:
            text = "Too many login attempts at once. Wait a minute, then try again."
        return self._login_response(request, text, 429)

    async def login(self, request: web.Request) -> web.StreamResponse:
        """Check the form token, the lockout and the password; start a session."""
        users = self._users()
        if isinstance(users, Unavailable):
            return self._unavailable(users)
        form = await request.post()
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        token = form.get("csrf")
        if not nonce or not same_token(
            token if isinstance(token, str) else None, self._login_token(nonce)
        ):
            return self._login_response(request, "The login form expired. Please try again.", 403)
        user = str(form.get("user") or "").strip()
        password = str(form.get("password") or "")
        addr = request.remote or "unknown"
        keys = [f"user:{user.lower()}", f"addr:{addr}"]
        # The attempt counts from here on, before the slow hash: parallel guesses
        # cannot all pass the check while none of them has failed yet.
        attempt = self.lockout.begin(keys)
        if not attempt.admitted:
            log.debug("login refused for %r from %s: locked out", user, addr)
            return self._refused_login(request, attempt.locked_for)
        try:
            good = await asyncio.to_thread(users.verify, user, password)
        finally:
            self.lockout.release(attempt)
        if self._users() is not users:  # changed during the check: its verdict is stale
            return self._login_response(request, "The logins changed meanwhile; try again.", 409)
        if not good:
            if self.lockout.fail(attempt.keys):
                log.warning(
                    "failed login for %r from %s: logins locked for %.0f s",
                    user,
                    addr,
                    self.web.lockout_duration,
                )
            else:
                log.warning("failed login for %r from %s", user, addr)
            return self._login_response(request, "Wrong user name or password.", 401)
        self.lockout.succeed(attempt.keys)
        cookie, _ = self.sessions.create(user, fingerprint=users.fingerprint(user) or "")
        log.info("user %s logged in from %s", user, addr)
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            httponly=True,
            samesite="Strict",
            secure=self.tls,
            path="/",
            max_age=int(self.web.session_lifetime),
        )
        response.del_cookie(LOGIN_COOKIE, path="/login")
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        """End the session."""
        self.sessions.end(request.cookies.get(SESSION_COOKIE))
        response = web.HTTPSeeOther("/login")
        response.del_cookie(SESSION_COOKIE, path="/")
        raise response
