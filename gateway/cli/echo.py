"""``dermgate echo --config FILE [--json]``: which of DermGate's SOP classes each PACS takes.

For every ``[[destinations]]`` entry it opens one association proposing Verification
and every (SOP class, transfer syntax) DermGate writes or derives
(:data:`gateway.forward.contexts.STORAGE_CONTEXTS`, one presentation context each,
as the forwarder proposes them), sends a C-ECHO, releases the association, and
prints what the receiver accepted and what it refused, by name and UID; over TLS for
a destination with ``tls = true`` (a failed handshake is the plain reason on its
line). Then the days to expiry of every certificate DICOM TLS uses (each
destination's ``tls_ca`` and ``tls_cert``, the listener's ``listen_tls_cert`` and
``listen_tls_ca``; the first certificate of a file). A class it refuses is
quarantined for that destination when a capture of it is sent (``fallback =
"quarantine"``), or sent as its derived object when the receiver takes that class
(``fallback = "compatible"``: so the Secondary Capture row says whether confocal
stacks can go that way). The destinations are asked in parallel, each on a worker
thread (pynetdicom blocks); nothing is written anywhere.

A DICOMweb destination (``kind = "dicomweb"``) has no presentation contexts: it is
asked one QIDO-RS query with its credentials, and the line says whether it answered
(every class is sent to it by STOW-RS; a class it does not take shows in the
per-instance answer).

Exit codes: 0 every destination answered; 1 at least one could not be reached or
rejected the association (the plain reason on its line; with ``--json`` also on
stderr); 2 bad usage or bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.core.config import ConfigError, DermGateConfig, DicomDestination, DicomwebDestination
from gateway.service.config import load_config

if TYPE_CHECKING:  # the senders are imported when a command runs, not to parse arguments
    from gateway.core.errors import DeliveryError
    from gateway.forward.cstore import Negotiation

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

EPILOG = """\
exit codes:
  0  every destination answered (whatever classes it refused)
  1  a destination could not be reached or refused the association
  2  bad usage or bad configuration
"""


async def _negotiate_all(config: DermGateConfig) -> list[dict[str, Any]]:
    """Every destination's entry, in configured order."""
    from gateway.forward.contexts import STORAGE_CONTEXTS
    from gateway.forward.cstore import CStoreSender
    from gateway.forward.stow import StowSender

    calling = config.gateway.ae_title

    async def one(destination: DicomDestination | DicomwebDestination) -> dict[str, Any]:
        if isinstance(destination, DicomwebDestination):
            return web_report(destination, await StowSender(destination).probe())
        sender = CStoreSender(calling, destination)
        return report(
            destination,
            await asyncio.to_thread(sender.negotiate, tuple(STORAGE_CONTEXTS.items())),
        )

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(d)) for d in config.destinations]
    return [t.result() for t in tasks]


def _by_class(pairs: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """[{uid, name, transfer_syntaxes}] in the order the classes were proposed."""
    from gateway.dicom.sop_classes import uid_name

    grouped: dict[str, list[str]] = {}
    for cls, ts in pairs:
        grouped.setdefault(cls, []).append(ts)
    return [
        {
            "uid": cls,
            "name": uid_name(cls),
            "transfer_syntaxes": [{"uid": ts, "name": uid_name(ts)} for ts in syntaxes],
        }
        for cls, syntaxes in grouped.items()
    ]


def report(destination: DicomDestination, answer: Negotiation) -> dict[str, Any]:
    """One destination's answer as ``--json`` prints it."""
    error = answer.error
    return {
        "name": destination.name,
        "kind": "dicom",
        "ae_title": destination.ae_title,
        "host": destination.host,
        "port": destination.port,
        "tls": destination.tls,
        "answered": error is None,
        "error": None
        if error is None
        else {"code": str(error.code), "message": error.message, "detail": error.detail},
        "echo_status": answer.echo_status,
        "accepted": _by_class(answer.accepted),
        "refused": _by_class(answer.refused),
    }


def web_report(destination: DicomwebDestination, error: DeliveryError | None) -> dict[str, Any]:
    """A DICOMweb destination's answer as ``--json`` prints it."""
    return {
        "name": destination.name,
        "kind": "dicomweb",
        "url": destination.url,
        "answered": error is None,
        "error": None
        if error is None
        else {"code": str(error.code), "message": error.message, "detail": error.detail},
    }


def certificates(config: DermGateConfig) -> list[dict[str, str]]:
    """Days to expiry of every certificate DICOM TLS uses (destinations, listener)."""
    from gateway.dicom.tls import certificate_files
    from gateway.status.checks.certificates import check_certificate

    found = []
    for path, what in certificate_files(config):
        result = check_certificate(path, what)
        found.append(
            {"what": what, "file": str(path), "status": result.status, "finding": result.finding}
        )
    return found


def _print_text(entry: dict[str, Any]) -> None:
    if entry.get("kind") == "dicomweb":
        where = f"DICOMweb {entry['url']}"
        error = entry["error"]
        if error is not None:
            print(f"{entry['name']} ({where}): NOT REACHED: {error['message']} ({error['detail']})")
        else:
            print(
                f"{entry['name']} ({where}): answers QIDO-RS; captures go by STOW-RS "
                "(no presentation contexts to list)"
            )
        return
    where = f"{entry['ae_title']}@{entry['host']}:{entry['port']}"
    if entry["tls"]:
        where += ", TLS"
    error = entry["error"]
    if error is not None:
        print(f"{entry['name']} ({where}): NOT REACHED: {error['message']} ({error['detail']})")
        return
    status = entry["echo_status"]
    echo = (
        "answers C-ECHO"
        if status == 0
        else "no C-ECHO answer"
        if status is None
        else f"C-ECHO status 0x{status:04X}"
    )
    print(f"{entry['name']} ({where}): {echo}")
    refused_syntaxes = {c["uid"]: c["transfer_syntaxes"] for c in entry["refused"]}
    for cls in entry["accepted"]:
        line = f"  accepts  {cls['name']}  {cls['uid']}"
        if cls["uid"] in refused_syntaxes:
            names = ", ".join(ts["name"] for ts in refused_syntaxes[cls["uid"]])
            line += f"  (not in {names})"
        print(line)
    accepted = {c["uid"] for c in entry["accepted"]}
    for cls in entry["refused"]:
        if cls["uid"] not in accepted:
            print(f"  refuses  {cls['name']}  {cls['uid']}")


def cmd_echo(args: argparse.Namespace) -> int:
    """Ask every destination which SOP classes it takes; see the module docstring."""
    try:
        config = load_config(args.config, broken_drivers_fatal=False)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    entries = asyncio.run(_negotiate_all(config))
    certs = certificates(config)
    if args.json:
        print(json.dumps({"destinations": entries, "certificates": certs}, indent=2))
    else:
        for entry in entries:
            _print_text(entry)
        if certs:
            print("certificates:")
        for cert in certs:
            print(
                f"  {cert['status'].upper():7}  {cert['what']} ({cert['file']}): {cert['finding']}"
            )
    unreached = [e for e in entries if not e["answered"]]
    if args.json:  # the text already says so, on its line
        for entry in unreached:
            print(f"dermgate echo: {entry['name']}: {entry['error']['message']}", file=sys.stderr)
    return EXIT_FAILURE if unreached else EXIT_OK


def add_echo_command(sub: Any) -> None:
    """Register ``dermgate echo`` on the ``dermgate`` sub-parsers."""
    echo = sub.add_parser(
        "echo",
        help="C-ECHO every destination and list which of DermGate's SOP classes it accepts "
        "(a DICOMweb destination: whether it answers)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    echo.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")
    echo.add_argument("--json", action="store_true", help="machine-readable output")
    echo.set_defaults(func=cmd_echo)


__all__ = ["add_echo_command", "certificates", "cmd_echo", "report", "web_report"]
