"""The integration API of a real ``dermgate run``: tokens made and removed with the CLI
(a removed token is refused at once, no restart), 401 for a missing or wrong token
alike, a lockout after repeated failures, the page's session only with its CSRF
header, and every malformed request a 4xx JSON answer that echoes no patient data."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tests.support.api import Answer, api_config, call, start_service, token_add
from tests.support.gateway_process import GatewayProcess
from tests.support.privacy import PATIENTS, LeakScanner, patient_secrets
from tests.support.web import PASSWORD, cookie_client, csrf_of, login_status, run_cli, user_add

#: A well-formed request that needs no context stage to be refused: the body is
#: checked after the token and before anything else, so 400 means "authenticated".
NOT_JSON = "this is not JSON"


async def _authenticated(session: aiohttp.ClientSession, base: str, token: str) -> bool:
    """True if ``token`` passes (its malformed body is then refused as bad JSON)."""
    answer = await call(session, "POST", f"{base}/api/v1/sessions", token=token, data=NOT_JSON)
    if answer.status == 401:
        assert answer.code == "unauthorized"
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        return False
    assert (answer.status, answer.code) == (400, "bad_json"), answer.text
    return True


def test_tokens_from_the_cli_open_the_api_and_a_removed_one_is_refused_at_once(
    tmp_path: Path, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    config, base = api_config(tmp_path)
    kiosk = token_add(config, "kiosk")
    ehr = token_add(config, "ehr")
    tokens_file = tmp_path / "state" / "web" / "api_tokens.json"
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600
    assert kiosk not in tokens_file.read_text()
    assert ehr not in tokens_file.read_text()

    again = run_cli("token", "add", "kiosk", "--config", str(config))
    assert again.returncode == 1
    assert "exists already" in again.stderr
    assert again.stdout == ""
    bad_name = run_cli("token", "add", "no spaces", "--config", str(config))
    assert bad_name.returncode == 2
    listed = run_cli("token", "list", "--config", str(config))
    assert listed.returncode == 0
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [r[0] for r in rows] == ["ehr", "kiosk"]
    assert all(r[1].endswith("Z") for r in rows)
    assert kiosk not in listed.stdout
    assert "sha256" not in listed.stdout
    start_service(gateway_factory, config, base)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            assert await _authenticated(s, base, kiosk)
            assert await _authenticated(s, base, ehr)
            # Missing, unknown and wrong tokens get the same answer.
            missing = await call(s, "GET", f"{base}/api/v1/held")
            wrong = await call(s, "GET", f"{base}/api/v1/held", token=kiosk[:-2] + "xx")
            basic = await call(s, "GET", f"{base}/api/v1/held",
                               headers={"Authorization": "Basic a2lvc2s6eA=="})  # fmt: skip
            for refused in (missing, wrong, basic):
                assert refused.status == 401
                assert refused.body == missing.body
                assert refused.headers["WWW-Authenticate"] == missing.headers["WWW-Authenticate"]

            # Removed while the service runs: refused at once; the other still works.
            removed = await asyncio.to_thread(
                run_cli, "token", "remove", "kiosk", "--config", str(config)
            )
            assert removed.returncode == 0, removed.stderr
            assert not await _authenticated(s, base, kiosk)
            assert await _authenticated(s, base, ehr)

            # Replaced: the old token of the name ends, the new one works.
            new_ehr = await asyncio.to_thread(token_add, config, "ehr", "--replace")
            assert not await _authenticated(s, base, ehr)
            assert await _authenticated(s, base, new_ehr)

    asyncio.run(scenario())
    unknown = run_cli("token", "remove", "kiosk", "--config", str(config))
    assert unknown.returncode == 1
    assert "no token kiosk" in unknown.stderr


def test_repeated_wrong_tokens_lock_the_address_out(
    tmp_path: Path, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    config, base = api_config(tmp_path, web_keys="lockout_failures = 3\nlockout_duration = 600")
    good = token_add(config, "kiosk")
    gateway = start_service(gateway_factory, config, base)

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            for n in range(3):
                answer = await call(s, "GET", f"{base}/api/v1/held", token=f"guess-{n}")
                assert answer.status == 401
            locked = await call(s, "GET", f"{base}/api/v1/held", token="guess-4")
            assert (locked.status, locked.code) == (429, "too_many")
            assert int(locked.headers["Retry-After"]) > 0
            # As with logins, the right token is refused while the address is locked.
            right = await call(s, "POST", f"{base}/api/v1/sessions", token=good, data=NOT_JSON)
            assert right.status == 429

    asyncio.run(scenario())
    assert "locked out" in gateway.log()
    assert good not in gateway.log()
    assert "guess-" not in gateway.log()


def test_the_pages_session_works_only_with_its_csrf_header(
    tmp_path: Path, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    config, base = api_config(tmp_path)
    user_add(config, "tech", PASSWORD)
    gateway = start_service(gateway_factory, config, base)

    async def scenario() -> None:
        async with cookie_client() as browser:
            before = await call(browser, "POST", f"{base}/api/v1/sessions", data=NOT_JSON)
            assert before.status == 401
            assert await login_status(browser, base, "tech", PASSWORD) == 303
            async with browser.get(f"{base}/") as page:
                csrf = csrf_of(await page.text())
            # A GET needs no CSRF token: it passes the session check (the worklist
            # search is checked next, before the context stage is asked).
            search = await call(browser, "GET", f"{base}/api/v1/worklist?q=" + "x" * 65)
            assert (search.status, search.code) == (422, "bad_request")
            forged = await call(browser, "POST", f"{base}/api/v1/sessions", data=NOT_JSON)
            assert (forged.status, forged.code) == (403, "csrf")
            made_up = await call(browser, "POST", f"{base}/api/v1/{PATIENTS[0].id}", data="{}")
            assert (made_up.status, made_up.code) == (403, "csrf")
            wrong = await call(browser, "DELETE", f"{base}/api/v1/sessions/1",
                               headers={"X-CSRF-Token": csrf + "x"})  # fmt: skip
            assert (wrong.status, wrong.code) == (403, "csrf")
            with_header = await call(browser, "POST", f"{base}/api/v1/sessions", data=NOT_JSON,
                                     headers={"X-CSRF-Token": csrf})  # fmt: skip
            assert (with_header.status, with_header.code) == (400, "bad_json")
            # Logged out: the cookie opens nothing any more.
            async with browser.post(f"{base}/logout", data={"csrf": csrf}) as r:
                await r.read()
            after = await call(browser, "GET", f"{base}/api/v1/held")
            assert after.status == 401

    asyncio.run(scenario())
    assert "without a valid CSRF token" in gateway.log()
    assert PATIENTS[0].id not in gateway.log(), "a made-up path is not logged"


_PATIENT = PATIENTS[0]


def _junk_requests() -> list[tuple[str, str, bytes | str | None, int]]:
    """(method, path, body, expected status) of malformed or hostile requests."""
    p = {"id": _PATIENT.id, "name": _PATIENT.name, "birth_date": _PATIENT.birth_date}
    wrong_sex = json.dumps({"device": "scope", "patient": {**p, "sex": _PATIENT.name}})
    bad_birth = json.dumps({"device": "scope", "patient": {**p, "birth_date": _PATIENT.id}})
    no_id = json.dumps({"device": "scope", "patient": {"name": _PATIENT.name}})
    name_key = json.dumps({"device": "scope", "unidentified": True, _PATIENT.name: 1})
    return [
        ("POST", "/api/v1/sessions", "not json {", 400),
        ("POST", "/api/v1/sessions", "[1, 2, 3]", 400),
        ("POST", "/api/v1/sessions", "", 400),
        ("POST", "/api/v1/sessions", b"\xff\xfe\x00junk\xc3\x28", 400),
        ("POST", "/api/v1/sessions", "[" * 50_000, 400),
        ("POST", "/api/v1/sessions", '{"device": "scope", "unidentified": NaN}', 400),
        ("POST", "/api/v1/sessions", json.dumps({"device": ["scope"], "unidentified": True}), 422),
        ("POST", "/api/v1/sessions", json.dumps({"device": "scope", "accession_number": 12}), 422),
        (
            "POST",
            "/api/v1/sessions",
            json.dumps({"device": "ß\u202e\U0001f600", "unidentified": True}),
            422,
        ),
        ("POST", "/api/v1/sessions", wrong_sex, 422),
        ("POST", "/api/v1/sessions", bad_birth, 422),
        ("POST", "/api/v1/sessions", no_id, 422),
        ("POST", "/api/v1/sessions", name_key, 422),
        ("POST", "/api/v1/sessions", "x" * (1024 * 1024), 413),
        ("POST", "/api/v1/sessions/1/lesion", json.dumps({"tracking_id": 3}), 422),
        (
            "POST",
            "/api/v1/sessions/1/lesion",
            json.dumps({"site": "SCT:1", "laterality": "X"}),
            422,
        ),
        ("POST", "/api/v1/held/assign", json.dumps({"spool_ids": ["1"], "session": 1}), 422),
        ("POST", "/api/v1/held/assign", json.dumps({"spool_ids": [1], "session": True}), 422),
        ("POST", "/api/v1/held/assign", json.dumps({"spool_ids": [2**70], "session": 1}), 422),
        ("GET", "/api/v1/worklist?q=%00", None, 422),
        ("GET", "/api/v1/sessions?all=maybe", None, 422),
        ("GET", "/api/v1/sessions/abc", None, 404),
        ("GET", "/api/v1/sessions/99999999999999999999", None, 404),
        ("GET", "/api/v1/sessions/9999999999999999999", None, 404),
        ("GET", "/api/v1/nowhere", None, 404),
        ("PUT", "/api/v1/sessions", "{}", 405),
        ("DELETE", "/api/v1/held", None, 405),
    ]


def test_malformed_requests_are_4xx_json_that_echo_nothing(
    tmp_path: Path, gateway_factory: Callable[[Path], GatewayProcess]
) -> None:
    config, base = api_config(tmp_path)
    token = token_add(config, "fuzz")
    gateway = start_service(gateway_factory, config, base)
    answers: list[Answer] = []

    async def scenario() -> None:
        async with aiohttp.ClientSession() as s:
            for method, path, data, status in _junk_requests():
                answer = await call(s, method, base + path, token=token, data=data)
                assert answer.status == status, (method, path, answer.status, answer.text[:300])
                answers.append(answer)
            alive = await call(s, "GET", f"{base}/api/v1/worklist?q=" + "y" * 65, token=token)
            assert alive.status == 422

    asyncio.run(scenario())
    leaks = LeakScanner(patient_secrets())
    for n, answer in enumerate(answers):
        leaks.scan(f"answer {n}", answer.text, "api answer")
    leaks.scan("gateway log", gateway.log(), "log")
    leaks.assert_clean()
    assert "Traceback" not in gateway.log()
    assert token not in gateway.log()
