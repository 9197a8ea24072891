"""Certificate and key files named in the configuration, checked when it is loaded.

A TLS file that is missing, unreadable, not PEM, or a key that does not belong to its
certificate would otherwise show up only at the first association, as a vague
"could not connect" retried for ever. So the models of ``[[destinations]]`` (``tls_*``)
and ``[gateway]`` (``listen_tls_*``) load each file the way the TLS layer will (the
standard :mod:`ssl` module, OpenSSL underneath) and refuse the configuration with the
reason. Only the files are judged here, not their dates: an expired certificate is
shown on the "why" page and by ``dermgate echo``, and the peer's answer says the rest.

An encrypted (passphrase-protected) private key is refused: the service has nobody to
type the passphrase, and OpenSSL would otherwise ask for it on the terminal.
"""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["check_certificate_file", "check_key_pair", "no_passphrase", "paired_key"]


def no_passphrase() -> bytes:
    """The passphrase callback for ``load_cert_chain``: none (never a terminal prompt)."""
    return b""


def _unreadable(path: Path, err: OSError) -> str:
    if isinstance(err, FileNotFoundError):
        return f"{path} does not exist"
    if isinstance(err, PermissionError):
        return f"{path} cannot be read (permissions)"
    if isinstance(err, IsADirectoryError):
        return f"{path} is a folder, not a file"
    return f"{path} cannot be read ({err.strerror or type(err).__name__})"


def check_certificate_file(path: Path) -> Path:
    """``path`` holds at least one PEM certificate (a CA, or ours); else ValueError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=str(path))
    except ssl.SSLError as err:
        raise ValueError(f"{path} holds no PEM certificate") from err
    except OSError as err:
        raise ValueError(_unreadable(path, err)) from err
    return path


def paired_key(key: Path | None, cert: Path | None) -> Path | None:
    """``key`` when it can serve with ``cert`` (either absent: nothing to check yet);
    else ValueError with the reason (for the models' validators)."""
    if key is not None and cert is not None:
        problem = check_key_pair(cert, key)
        if problem is not None:
            raise ValueError(problem)
    return key


def check_key_pair(cert: Path, key: Path) -> str | None:
    """Why ``cert`` and ``key`` cannot serve as one TLS identity (None: they can).

    ``cert`` must be a PEM certificate (optionally followed by its intermediate CAs),
    ``key`` its unencrypted PEM private key.
    """
    for path in (cert, key):
        if not path.is_file():
            try:
                path.open("rb").close()
            except OSError as err:
                return _unreadable(path, err)
            return f"{path} is not a regular file"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(str(cert), str(key), password=no_passphrase)
    except ssl.SSLError as err:
        if err.reason == "KEY_VALUES_MISMATCH":
            return f"{key} is not the private key of {cert}"
        try:
            check_certificate_file(cert)
        except ValueError as not_cert:
            return str(not_cert)
        return f"{key} is not an unencrypted PEM private key"
    except OSError as err:
        return _unreadable(key, err)
    return None
