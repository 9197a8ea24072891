"""``dermgate demo``: the embedded default, all on this machine.

Starts a private Orthanc (Debian's ``/usr/sbin/Orthanc``) on free loopback ports,
with our commitment listener registered in its ``DicomModalities``; writes a
gateway configuration pointing at it; starts the serial dermatoscope simulator on
a pty; and runs the gateway in this process. With ``--captures N`` it exits 0 once
N captures are stored in Orthanc (found there by SOP Instance UID), 1 on timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from gateway.config import load_config
from gateway.local_orthanc import OrthancProcess, free_port
from gateway.spool import ledger as db
from gateway.spool.states import CaptureState

log = logging.getLogger(__name__)

DEMO_AE = "DERMGATE"


def demo_config(workdir: Path, orthanc: OrthancProcess, listen_port: int) -> str:
    """The gateway configuration the demo runs with."""
    return f"""\
# Written by `dermgate demo`. A real box keeps its configuration in /etc/dermgate.
[gateway]
id = "dermgate-demo"
ae_title = "{DEMO_AE}"
listen_port = {listen_port}
state_dir = "{workdir / "state"}"

[[destinations]]
name = "demo-pacs"
kind = "dicom"
ae_title = "{orthanc.aet}"
host = "127.0.0.1"
port = {orthanc.dicom_port}
storage_commitment = true
retry_initial = 1.0
retry_max = 30.0

[[devices]]
driver = "serial-dermatoscope"
name = "dermatoscope"
port = "{workdir / "ttyDERM0"}"
"""


def _delivered_uids(ledger_path: Path) -> list[str]:
    if not ledger_path.exists():
        return []
    conn = db.open_ledger(ledger_path, readonly=True)
    try:
        rows = conn.execute(
            "SELECT sop_instance_uid FROM captures WHERE state IN (?, ?)",
            (CaptureState.SENT, CaptureState.COMMITTED),
        ).fetchall()
    finally:
        conn.close()
    return [str(r[0]) for r in rows]


async def _watch_pacs(
    orthanc: OrthancProcess, ledger_path: Path, wanted: int, stop: asyncio.Event
) -> None:
    found: set[str] = set()
    while len(found) < wanted:
        await asyncio.sleep(1.0)
        try:
            uids = await asyncio.to_thread(_delivered_uids, ledger_path)
        except sqlite3.Error:
            continue
        for uid in uids:
            if uid in found:
                continue
            if await asyncio.to_thread(orthanc.find_instances, uid):
                found.add(uid)
                log.info("demo: %d of %d captures stored in Orthanc", len(found), wanted)
    stop.set()


async def _run(
    workdir: Path, orthanc: OrthancProcess, config_path: Path, captures: int | None, timeout: float
) -> int:
    from gateway.app import run_gateway

    config = load_config(config_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway = asyncio.create_task(run_gateway(config, stop), name="gateway")
    watcher: asyncio.Task[None] | None = None
    if captures is not None:
        watcher = asyncio.create_task(
            _watch_pacs(orthanc, config.ledger_path(), captures, stop), name="watch-pacs"
        )
    try:
        await asyncio.wait_for(stop.wait(), timeout if captures is not None else None)
    except TimeoutError:
        log.error(
            "demo: timed out after %.0f s before %s captures reached Orthanc", timeout, captures
        )
        stop.set()
        await gateway
        return 1
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    await gateway
    return 0


def run_demo(*, workdir: Path, captures: int | None, timeout: float) -> int:
    """Run the demo; the exit code of ``dermgate demo``."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    listen_port = free_port()
    orthanc = OrthancProcess(
        workdir / "orthanc", modalities={"dermgate": (DEMO_AE, "127.0.0.1", listen_port)}
    )
    try:
        orthanc.start()
    except (OSError, RuntimeError) as err:
        print(f"dermgate demo: cannot start Orthanc: {err}", file=sys.stderr)
        return 1
    config_path = workdir / "dermgate.toml"
    config_path.write_text(demo_config(workdir, orthanc, listen_port), encoding="utf-8")
    link = workdir / "ttyDERM0"
    simulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "drivers.serial_dermatoscope.simulator",
            "--link",
            str(link),
            "--captures",
            str(captures if captures is not None else 100_000),
            "--interval",
            "0.5" if captures is not None else "5",
            "--timeout",
            str(timeout if captures is not None else 10 * 365 * 86400),
            "--report",
            str(workdir / "simulator-report.json"),
        ],
    )
    print(
        f"""
DermGate demo is running.
  Orthanc Explorer (the PACS):  {orthanc.url}/app/explorer.html
  Gateway configuration:        {config_path}
  Spool (captures, DICOM):      {workdir / "state" / "spool"}
  Simulated dermatoscope:       {link}
  Watch the spool:              dermgate spool list --config {config_path}
{"Stops once " + str(captures) + " captures are in Orthanc." if captures else "Ctrl-C stops."}
""",
        flush=True,
    )
    started = time.monotonic()
    try:
        code = asyncio.run(_run(workdir, orthanc, config_path, captures, timeout))
    finally:
        if simulator.poll() is None:
            simulator.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                simulator.wait(10)
            if simulator.poll() is None:
                simulator.kill()
        orthanc.stop()
    if code == 0 and captures is not None:
        print(
            f"dermgate demo: {captures} captures in Orthanc after "
            f"{time.monotonic() - started:.1f} s"
        )
    return code
