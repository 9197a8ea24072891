"""`dermgate run` sends to Orthanc's DICOMweb plugin behind a bearer token and behind
OAuth2 client credentials; secrets never show.

Orthanc (with ``libOrthancDicomWeb.so``) is the peer. In front of it a small reverse
proxy written here lets a request through only with a token it accepts (test
scaffolding: Orthanc itself has no bearer auth); the OAuth2 token endpoint is
written here too (RFC 6749 §4.4). Captures come from the photo-folder camera
simulator, so the test decides when each arrives. Each capture is COMMITTED only
once read-back (QIDO-RS, through the proxy) lists it, and Orthanc is asked directly
that every instance is there once. The token file appears only after the first
captures (they wait), then is rotated while the gateway runs (both ways round: the
old token refused first, and the file changed first), the
OAuth2 tokens expire and one is revoked. Afterwards no token, client secret or
encoded credential appears in the gateway's log, its MQTT messages or the CLI.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote_plus

from tests.support.dicomweb import DicomwebOrthanc, dicomweb_config
from tests.support.gateway_process import GatewayProcess
from tests.support.http_auth import (
    CLIENT_ID,
    CLIENT_SECRET,
    BearerProxy,
    ServedInThread,
    TokenEndpoint,
    secret_file,
    server_tls,
)
from tests.support.mqtt import Mosquitto, Recorder, make_tls
from tests.support.photo_folder import photo_folder_toml, start_camera
from tests.support.state import delivery_rows, ledger_rows, states
from tests.support.waiting import wait_for

TOKEN_A = "eyJhbGciOi.tokenA-1111.sigAAAA"
TOKEN_B = "eyJhbGciOi.tokenB-2222.sigBBBB"
TOKEN_C = "eyJhbGciOi.tokenC-3333.sigCCCC"


def _config(tmp_path: Path, url: str, auth: str, mosquitto: Mosquitto) -> tuple[Path, Path]:
    """A gateway with the photo folder as its device, one DICOMweb destination at
    ``url`` with the ``auth`` keys, and MQTT; returns (config, photo folder)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    config = dicomweb_config(tmp_path, url, destination=auth, devices=photo_folder_toml(folder))
    with config.open("a", encoding="utf-8") as fh:
        fh.write("\n" + mosquitto.config_section())
    return config, folder


def _photos(folder: Path, tmp_path: Path, run: int, count: int) -> None:
    """Drop ``count`` photos (run ``run``) and wait until the gateway took them all."""
    workdir = tmp_path / f"camera-{run}"
    workdir.mkdir()
    camera = start_camera(folder, workdir, "--photos", str(count), "--seed", str(run))
    try:
        assert camera.wait(120) == 0, camera.log()
    finally:
        camera.stop()
    assert len(camera.report()["acknowledged"]) == count


def _committed(state_dir: Path, count: int) -> Callable[[], bool]:
    return lambda: states(state_dir) == ["COMMITTED"] * count


def _cli_outputs(config: Path, state_dir: Path) -> dict[str, str]:
    """What `spool list` (plain and --json) and `spool show` of each capture print."""
    runs = [("spool", "list"), ("spool", "list", "--json")]
    runs += [("spool", "show", str(row["id"])) for row in ledger_rows(state_dir)]
    outputs = {}
    for args in runs:
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        outputs["dermgate " + " ".join(args)] = done.stdout + done.stderr
    return outputs


def _assert_no_secret(secrets: dict[str, str], texts: dict[str, str]) -> None:
    """No secret (nor its base64 or URL-encoded form) in any of the texts."""
    forms = {}
    for label, value in secrets.items():
        forms[label] = value
        forms[f"{label} (URL-encoded)"] = quote_plus(value)
    hits = [
        f"{label} in {where}"
        for where, text in texts.items()
        for label, value in forms.items()
        if value in text
    ]
    assert not hits, "secrets where they must not be:\n" + "\n".join(hits)


def _everything_shown(
    gateway: GatewayProcess, rec: Recorder, config: Path, state_dir: Path
) -> dict[str, str]:
    texts = {"the gateway log": gateway.log()}
    messages = rec.all()
    assert messages, "the gateway published over MQTT"
    for n, message in enumerate(messages, 1):
        texts[f"MQTT message {n} on {message.topic}"] = message.topic + " " + str(message.payload)
    texts.update(_cli_outputs(config, state_dir))
    return texts


def _in_orthanc(orthanc: DicomwebOrthanc, state_dir: Path) -> None:
    uids = [str(row["sop_instance_uid"]) for row in ledger_rows(state_dir)]
    assert orthanc.copies(uids) == dict.fromkeys(uids, 1), "each capture stored once in Orthanc"


def test_bearer_token_file_rotated_while_running(
    tmp_path: Path,
    dicomweb_orthanc_factory: Callable[..., DicomwebOrthanc],
    served_in_thread: ServedInThread,
    mosquitto: Mosquitto,
    recorder_factory: Callable[..., Recorder],
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    orthanc = dicomweb_orthanc_factory()
    accepted = {TOKEN_A}
    proxy = BearerProxy(orthanc.url, lambda token: token in accepted)
    base = served_in_thread.serve(proxy.app())
    token = tmp_path / "token"  # not there yet: whatever issues it has not run
    config, folder = _config(
        tmp_path, f"{base}/dicom-web", f'auth = "bearer"\ntoken_file = "{token}"', mosquitto
    )
    rec = recorder_factory(mosquitto, ["#"])
    state_dir = tmp_path / "state"
    gateway = gateway_factory(config)

    _photos(folder, tmp_path, 1, 2)
    reason = wait_for(
        lambda: delivery_rows(state_dir)[0]["last_error"], 30, "the missing file's reason"
    )
    assert f"the token file {token} does not exist" in reason
    assert proxy.seen == [], "nothing sent without a token"
    secret_file(token, TOKEN_A + "\n")
    wait_for(_committed(state_dir, 2), 90, "2 captures COMMITTED with token A")
    assert {r.token for r in proxy.seen} == {TOKEN_A}
    assert {r.method for r in proxy.seen} == {"POST", "GET"}, "STOW-RS and read-back"

    # The service revokes token A before the box has the new one: refused, retried.
    accepted.clear()
    accepted.add(TOKEN_B)
    _photos(folder, tmp_path, 2, 1)
    wait_for(
        lambda: any(r.status == 401 and r.method == "POST" for r in proxy.seen),
        60,
        "the old token refused by the proxy",
    )
    reason = wait_for(lambda: delivery_rows(state_dir)[2]["last_error"], 30, "the refusal's reason")
    assert "refused the credentials" in reason, "a plain reason, for the page and `spool show`"
    assert states(state_dir)[2] != "COMMITTED"
    secret_file(tmp_path / "token.new", TOKEN_B + "\n").replace(token)
    wait_for(_committed(state_dir, 3), 60, "the capture COMMITTED once the file has token B")

    # The file changes first (in place), then the old token stops working: no refusal.
    refused = sum(r.status == 401 for r in proxy.seen)
    accepted.add(TOKEN_C)
    secret_file(token, TOKEN_C + "\n")
    accepted.discard(TOKEN_B)
    _photos(folder, tmp_path, 3, 1)
    wait_for(_committed(state_dir, 4), 60, "the capture COMMITTED with token C")
    assert sum(r.status == 401 for r in proxy.seen) == refused, "token C read before use"
    assert not [
        r for r in proxy.seen if r.status < 400 and r.token not in (TOKEN_A, TOKEN_B, TOKEN_C)
    ]
    refused_a = [r for r in proxy.seen if r.token == TOKEN_A and r.status == 401]
    assert refused_a, "token A was refused after the revocation"
    _in_orthanc(orthanc, state_dir)
    assert gateway.stop() == 0

    texts = _everything_shown(gateway, rec, config, state_dir)
    _assert_no_secret({"token A": TOKEN_A, "token B": TOKEN_B, "token C": TOKEN_C}, texts)


def test_oauth2_client_credentials_tokens_expire_and_are_refreshed(
    tmp_path: Path,
    dicomweb_orthanc_factory: Callable[..., DicomwebOrthanc],
    served_in_thread: ServedInThread,
    mosquitto: Mosquitto,
    recorder_factory: Callable[..., Recorder],
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    orthanc = dicomweb_orthanc_factory()
    endpoint = TokenEndpoint(expires_in=3, prefix="at.Zx81kq-")
    token_base = served_in_thread.serve(endpoint.app())
    proxy = BearerProxy(orthanc.url, endpoint.valid)
    base = served_in_thread.serve(proxy.app())
    secret = secret_file(tmp_path / "client_secret", CLIENT_SECRET + "\n")
    auth = f"""auth = "oauth2"
token_url = "{token_base}/token"
client_id = "{CLIENT_ID}"
client_secret_file = "{secret}"
scope = "dicom.write"
"""
    config, folder = _config(tmp_path, f"{base}/dicom-web", auth, mosquitto)
    rec = recorder_factory(mosquitto, ["#"])
    state_dir = tmp_path / "state"
    gateway = gateway_factory(config)

    _photos(folder, tmp_path, 1, 2)
    wait_for(_committed(state_dir, 2), 90, "2 captures COMMITTED")
    fetched = len(endpoint.calls)
    assert fetched >= 1
    time.sleep(3.5)  # the token runs out
    endpoint.expires_in = 3600  # the next one lives on, so that only a revocation ends it
    _photos(folder, tmp_path, 2, 1)
    wait_for(_committed(state_dir, 3), 60, "a capture COMMITTED with a new token")
    assert len(endpoint.calls) > fetched, "a new token was fetched after expiry"
    assert not [r for r in proxy.seen if r.status == 401], "expiry foreseen, never refused"

    # The service revokes the token in use: refused once, a new one fetched, delivered.
    endpoint.revoked.update(list(endpoint.issued))
    fetched = len(endpoint.calls)
    _photos(folder, tmp_path, 3, 1)
    wait_for(_committed(state_dir, 4), 60, "a capture COMMITTED after the revocation")
    assert [r for r in proxy.seen if r.status == 401], "the revoked token was refused"
    assert len(endpoint.calls) > fetched
    assert gateway.stop() == 0

    calls = list(endpoint.calls)
    assert {c.client_auth for c in calls} == {"basic"}
    assert all(
        c.form == {"grant_type": "client_credentials", "scope": "dicom.write"} for c in calls
    )
    for request in proxy.seen:
        if request.status < 400:
            assert request.token in endpoint.issued
    _in_orthanc(orthanc, state_dir)

    texts = _everything_shown(gateway, rec, config, state_dir)
    secrets = {"client secret": CLIENT_SECRET}
    basic = base64.b64encode(f"{CLIENT_ID}:{quote_plus(CLIENT_SECRET)}".encode()).decode()
    secrets["client credentials, Basic-encoded"] = basic
    for n, issued in enumerate(list(endpoint.issued), 1):
        secrets[f"access token {n}"] = issued
    _assert_no_secret(secrets, texts)


def test_https_store_is_trusted_only_through_tls_ca_and_its_own_name(
    tmp_path: Path,
    dicomweb_orthanc_factory: Callable[..., DicomwebOrthanc],
    served_in_thread: ServedInThread,
    mosquitto: Mosquitto,
    recorder_factory: Callable[..., Recorder],
    gateway_factory: Callable[[Path], GatewayProcess],
) -> None:
    orthanc = dicomweb_orthanc_factory()
    tls = make_tls(tmp_path / "tls")  # the server certificate is for 127.0.0.1 and localhost
    proxy = BearerProxy(orthanc.url, lambda token: token == TOKEN_A)
    server = server_tls(tls.server_cert, tls.server_key)
    base = served_in_thread.serve(proxy.app(), ssl_context=server)
    # The same store without the CA, and under an address its certificate does not name.
    refused = {
        "no-ca": BearerProxy(orthanc.url, proxy.accepts),
        "wrong-name": BearerProxy(orthanc.url, proxy.accepts),
    }
    no_ca = served_in_thread.serve(refused["no-ca"].app(), ssl_context=server)
    elsewhere = served_in_thread.serve(
        refused["wrong-name"].app(), host="127.0.0.2", ssl_context=server
    )
    token = secret_file(tmp_path / "token", TOKEN_A + "\n")
    auth = f'auth = "bearer"\ntoken_file = "{token}"\ntls_ca = "{tls.ca}"'
    config, folder = _config(tmp_path, f"{base}/dicom-web", auth, mosquitto)
    for name, url, ca in (
        ("no-ca", f"{no_ca}/dicom-web", ""),
        ("wrong-name", f"{elsewhere}/dicom-web", f'tls_ca = "{tls.ca}"'),
    ):
        with config.open("a", encoding="utf-8") as fh:
            fh.write(
                f'\n[[destinations]]\nname = "{name}"\nkind = "dicomweb"\nurl = "{url}"\n'
                f'auth = "bearer"\ntoken_file = "{token}"\n{ca}\n'
                "retry_initial = 0.5\nretry_max = 2.0\nconnect_timeout = 3\n"
            )
    recorder_factory(mosquitto, ["#"])
    state_dir = tmp_path / "state"
    gateway = gateway_factory(config)

    _photos(folder, tmp_path, 1, 1)

    def outcome() -> dict[str, str] | None:
        rows = {str(r["destination"]): r for r in delivery_rows(state_dir)}
        if len(rows) < 3 or rows["cloud"]["state"] != "COMMITTED":
            return None
        if not (rows["no-ca"]["last_error"] and rows["wrong-name"]["last_error"]):
            return None
        return {name: str(row["last_error"]) for name, row in rows.items()}

    errors = wait_for(outcome, 60, "delivered to cloud, refused by the two others")
    # In words a technician can act on, not the client library's exception name.
    assert "not signed by a trusted CA (set tls_ca)" in errors["no-ca"], errors
    assert "not issued for that name or address" in errors["wrong-name"], errors
    codes = {str(r["destination"]): r["error_code"] for r in delivery_rows(state_dir)}
    assert codes["no-ca"] == codes["wrong-name"] == "tls_untrusted", codes
    _in_orthanc(orthanc, state_dir)
    assert states(state_dir) != ["COMMITTED"], "not COMMITTED while two destinations lack it"
    # The refused ones never got as far as a request: the token went only where trusted.
    assert {r.token for r in proxy.seen} == {TOKEN_A}
    assert refused["no-ca"].seen == []
    assert refused["wrong-name"].seen == []
    assert gateway.stop() == 0
    assert TOKEN_A not in gateway.log()
