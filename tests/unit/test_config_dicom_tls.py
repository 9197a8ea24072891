"""DICOM TLS keys are checked when the configuration loads: each problem names its key."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gateway.core.config import ConfigError
from gateway.core.errors import DeliveryErrorCode
from gateway.forward.cstore import CStoreSender
from gateway.service.config import load_config
from tests.support.dicom_tls import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """One test CA and its certificates for the whole module."""
    return make_pki(tmp_path_factory.mktemp("pki"))


def config_with(tmp_path: Path, destination: str = "", gateway: str = "") -> Path:
    path = tmp_path / "dermgate.toml"
    path.write_text(
        f'[gateway]\nid = "box"\nstate_dir = "{tmp_path}"\n{gateway}\n'
        '[[destinations]]\nname = "pacs"\nkind = "dicom"\nae_title = "ORTHANC"\n'
        f'host = "127.0.0.1"\nport = 2762\n{destination}',
        encoding="utf-8",
    )
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [p.split(": ", 1)[1] for p in caught.value.problems]


def test_a_complete_mutual_tls_destination_and_listener_load(tmp_path: Path, pki: Pki) -> None:
    config = load_config(
        config_with(
            tmp_path,
            f'tls = true\ntls_ca = "{pki.ca}"\ntls_cert = "{pki.cert("gateway")}"\n'
            f'tls_key = "{pki.key("gateway")}"\n',
            f'listen_tls_cert = "{pki.cert("listener")}"\n'
            f'listen_tls_key = "{pki.key("listener")}"\nlisten_tls_ca = "{pki.ca}"\n',
        )
    )
    (destination,) = config.dicom_destinations()
    assert destination.tls
    assert destination.tls_verify_hostname
    assert config.gateway.listen_tls
    assert config.gateway.listen_tls_port == 2762
    assert not load_config(config_with(tmp_path)).gateway.listen_tls, "off unless configured"


def test_missing_and_non_certificate_files_are_named(tmp_path: Path, pki: Pki) -> None:
    missing = tmp_path / "nowhere.pem"
    assert problems(config_with(tmp_path, f'tls = true\ntls_ca = "{missing}"\n')) == [
        f"destinations[0].tls_ca: {missing} does not exist"
    ]
    key_as_ca = f'tls = true\ntls_ca = "{pki.key("ca")}"\n'
    assert problems(config_with(tmp_path, key_as_ca)) == [
        f"destinations[0].tls_ca: {pki.key('ca')} holds no PEM certificate"
    ]
    swapped = f'tls = true\ntls_cert = "{pki.key("gateway")}"\ntls_key = "{pki.key("gateway")}"\n'
    assert problems(config_with(tmp_path, swapped)) == [
        f"destinations[0].tls_cert: {pki.key('gateway')} holds no PEM certificate"
    ]


def test_a_server_name_must_be_a_bare_name(tmp_path: Path, pki: Pki) -> None:
    keys = f'tls = true\ntls_ca = "{pki.ca}"\ntls_server_name = "https://pacs.example"\n'
    assert problems(config_with(tmp_path, keys)) == [
        "destinations[0].tls_server_name: give a bare host name or IP address, "
        'e.g. "pacs.example.org"'
    ]


def test_a_key_of_another_certificate_is_refused(tmp_path: Path, pki: Pki) -> None:
    other = f'tls = true\ntls_cert = "{pki.cert("gateway")}"\ntls_key = "{pki.key("pacs")}"\n'
    assert problems(config_with(tmp_path, other)) == [
        f"destinations[0].tls_key: {pki.key('pacs')} is not the private key of "
        f"{pki.cert('gateway')}"
    ]
    listener = f'listen_tls_cert = "{pki.cert("listener")}"\nlisten_tls_key = "{pki.key("ca")}"\n'
    assert problems(config_with(tmp_path, gateway=listener)) == [
        f"gateway.listen_tls_key: {pki.key('ca')} is not the private key of {pki.cert('listener')}"
    ]


def test_an_encrypted_key_is_refused_without_asking_for_a_passphrase(
    tmp_path: Path, pki: Pki
) -> None:
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(pki.key("gateway")), "-aes256", "-passout",
         "pass:secret", "-out", str(encrypted)],
        check=True, capture_output=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    keys = f'tls = true\ntls_cert = "{pki.cert("gateway")}"\ntls_key = "{encrypted}"\n'
    assert problems(config_with(tmp_path, keys)) == [
        f"destinations[0].tls_key: {encrypted} is not an unencrypted PEM private key"
    ]


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        (
            'tls = true\ntls_cert = "{cert}"\n',
            "tls_cert and tls_key go together: give both, or neither",
        ),
        ('tls_ca = "{ca}"\n', "tls_ca need tls = true"),
        (
            'tls_ca = "{ca}"\ntls_server_name = "pacs.example"\n',
            "tls_ca, tls_server_name need tls = true",
        ),
        (
            "tls = true\ntls_verify_hostname = false\n",
            "tls_verify_hostname = false needs tls_ca (with the system's CAs, any "
            "certificate they signed would pass)",
        ),
    ],
)
def test_incomplete_tls_keys_are_refused_with_the_key_named(
    tmp_path: Path, pki: Pki, keys: str, problem: str
) -> None:
    text = keys.format(cert=pki.cert("gateway"), ca=pki.ca)
    assert problems(config_with(tmp_path, text)) == [f"destinations[0]: {problem}"]


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        (
            'listen_tls_cert = "{cert}"\n',
            "listen_tls_cert and listen_tls_key go together: give both, or neither",
        ),
        ('listen_tls_ca = "{ca}"\n', "listen_tls_ca needs listen_tls_cert and listen_tls_key"),
        (
            'listen_tls_cert = "{cert}"\nlisten_tls_key = "{key}"\nlisten_port = 2762\n',
            "listen_tls_port must differ from listen_port",
        ),
    ],
)
def test_incomplete_listener_keys_are_refused(
    tmp_path: Path, pki: Pki, keys: str, problem: str
) -> None:
    text = keys.format(cert=pki.cert("listener"), key=pki.key("listener"), ca=pki.ca)
    assert problems(config_with(tmp_path, gateway=text)) == [f"gateway: {problem}"]


def test_tls_files_gone_after_loading_fail_the_attempt_with_the_reason(
    tmp_path: Path, pki: Pki
) -> None:
    folder = tmp_path / "tls"
    folder.mkdir()
    cert, key = folder / "gateway.pem", folder / "gateway.key"
    cert.write_bytes(pki.cert("gateway").read_bytes())
    key.write_bytes(pki.key("gateway").read_bytes())
    config = load_config(
        config_with(tmp_path, f'tls = true\ntls_cert = "{cert}"\ntls_key = "{key}"\n')
    )
    key.unlink()  # removed while the service runs
    (destination,) = config.dicom_destinations()
    error = CStoreSender("DERMGATE", destination).echo()
    assert error is not None
    assert error.code is DeliveryErrorCode.OTHER
    assert (
        error.detail
        == "cannot read the TLS files of pacs (FileNotFoundError: No such file or directory)"
    )


def test_a_dicomweb_stores_ca_file_is_checked_at_load_too(tmp_path: Path, pki: Pki) -> None:
    """``tls_ca`` of a DICOMweb store: refused at load like a PACS's (before, the
    service started and every request failed with "the CA file does not exist")."""
    missing = tmp_path / "nowhere.pem"
    store = '\n[[destinations]]\nname = "cloud"\nkind = "dicomweb"\nurl = "https://store.example"\n'
    path = config_with(tmp_path)
    path.write_text(path.read_text(encoding="utf-8") + store + f'tls_ca = "{missing}"\n')
    assert problems(path) == [f"destinations[1].tls_ca: {missing} does not exist"]
    path = config_with(tmp_path)
    path.write_text(path.read_text(encoding="utf-8") + store + f'tls_ca = "{pki.ca}"\n')
    (cloud,) = load_config(path).dicomweb_destinations()
    assert cloud.tls_ca == pki.ca
