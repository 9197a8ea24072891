"""``dermgate demo``: the embedded default, all on this machine.

Starts a private Orthanc (Debian's ``/usr/sbin/Orthanc``) on free loopback ports,
with our commitment listener registered in its ``DicomModalities``, and a private
Mosquitto broker for the fleet status (MQTT); serves the technician's page with a
one-time login it prints; writes a
gateway configuration pointing at it; starts one simulator per device class (a
serial dermatoscope on a pty, a USB confocal microscope behind the emulated pyusb
backend, a 3D body scanner's export folder, a clinical camera's photo folder); and
runs the gateway in this process.

With ``--captures N`` every simulated device makes N captures (the scanner N
exports, the microscope N stacks) and the demo exits 0 once each simulator has had
all of them acknowledged and every DICOM object they became is stored in Orthanc
(found there by SOP Instance UID), 1 on timeout. Without it the simulators are
started again, with fresh content, each time they finish, until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from gateway.context.desk import (
    Actor,
    ContextDesk,
    ContextError,
    PickItem,
    SessionRequest,
    TypedPatient,
)
from gateway.context.stage import ContextStage
from gateway.core.capture import PatientContext
from gateway.demo.local_mosquitto import MosquittoProcess
from gateway.demo.local_orthanc import OrthancProcess, free_port
from gateway.demo.worklist import (
    DEMO_ISSUER,
    WORKLIST_PLUGIN,
    demo_patients,
    orthanc_worklist_settings,
    worklist_plugin_available,
    write_demo_worklist,
)
from gateway.service.config import load_config
from gateway.service.state_lock import StateLocked
from gateway.spool import ledger as db
from gateway.spool.figures import sop_instance_states
from gateway.spool.rebuild import LedgerLost
from gateway.spool.spool_ids import SpoolIdMarkDamaged
from gateway.spool.states import CaptureState
from gateway.status.web.users import Users

log = logging.getLogger(__name__)

DEMO_AE = "DERMGATE"
DEMO_USER = "demo"
DEMO_MODALITY = "XC"  # what the demo's worklist schedules for this box
#: The lesion the dermatoscope and the confocal microscope both examine (one Tracking UID).
DEMO_LESION = ("--lesion-id", "L01", "--anatomic-site", "699893008", "--laterality", "L")
_FOREVER_PAUSE = 20.0


@dataclass
class DemoDevice:
    """One simulated device: its ``[[devices]]`` section and its simulator command."""

    name: str
    section: str
    simulate: list[str]
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0
    finished: bool = False
    next_start: float = 0.0
    report: Path = field(default_factory=Path)

    def start(self, workdir: Path, captures: int | None, timeout: float) -> None:
        """Start (or, in forever mode, restart) the simulator with fresh content."""
        self.runs += 1
        self.report = workdir / f"simulator-{self.name}.json"
        count = str(captures if captures is not None else 2)
        argv = [part.replace("{N}", count) for part in self.simulate]
        argv += ["--seed", str(self.runs), "--report", str(self.report)]
        argv += ["--timeout", str(timeout if captures is not None else 3600)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "simulate", *argv],
            stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        """Stop the simulator if it still runs."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def one_time_login(users_file: Path) -> str:
    """Give the demo user a fresh random password (a new one every demo run)."""
    password = secrets.token_urlsafe(12)
    users = Users.load(users_file)  # a missing file is no users
    users.set_password(DEMO_USER, password)
    users.save(users_file)
    return password


def demo_devices(workdir: Path) -> list[DemoDevice]:
    """The four simulated devices of the demo."""
    scans = workdir / "scanner-exports"
    photos = workdir / "camera-photos"
    for folder in (scans, photos):
        folder.mkdir(parents=True, exist_ok=True)
    link = workdir / "ttyDERM0"
    usb = workdir / "confocal-usb.sock"
    return [
        DemoDevice(
            "dermatoscope",
            f'''driver = "serial-dermatoscope"
port = "{link}"''',
            [
                *("serial-dermatoscope", "--link", str(link), "--captures", "{N}"),
                *("--interval", "1", *DEMO_LESION),
            ],
        ),
        DemoDevice(
            "confocal",
            f'''driver = "usb-confocal"
usb_backend = "emulated:{usb}"''',
            [
                *("usb-confocal", "--socket", str(usb), "--stacks", "{N}"),
                *("--frames", "16", "--size", "512x512", *DEMO_LESION),
            ],
        ),
        DemoDevice(
            "body-scanner",
            f'''driver = "scanner-export"
folder = "{scans}"''',
            # No patient in the export: the session names it (an export naming
            # another patient than the session's would be held, not sent).
            [
                *("scanner-export", "--folder", str(scans), "--scans", "{N}"),
                *("--mesh-mb", "4", "--no-patient"),
            ],
        ),
        DemoDevice(
            "camera",
            f'''driver = "photo-folder"
folder = "{photos}"''',
            ["photo-folder", "--folder", str(photos), "--photos", "{N}"],
        ),
    ]


async def open_demo_sessions(desk: ContextDesk, *, worklist: bool) -> None:
    """Start a patient on every demo device, as a technician would on the page: the
    first scheduled patient on the dermatoscope and the confocal microscope (one
    study, one lesion), the second on the body scanner and the camera. Without a
    worklist, the same patients typed in (unscheduled: no order, a minted study)."""
    technician = Actor("user", DEMO_USER, operator_name="Demo^Technician")
    first, second = demo_patients()
    if worklist:
        await desk.refresh_worklist()
    pairs = ((first, ("dermatoscope", "confocal")), (second, ("body-scanner", "camera")))
    for patient, devices in pairs:
        typed = TypedPatient(
            PatientContext(
                patient_name=patient.name,
                patient_id=patient.patient_id,
                issuer_of_patient_id=DEMO_ISSUER,
                birth_date=patient.birth_date,
                sex=patient.sex,
            )
        )
        for device in devices:
            request: SessionRequest = (
                PickItem(accession_number=patient.accession_number) if worklist else typed
            )
            try:
                await desk.open_session(device, request, technician)
            except ContextError as err:  # the worklist did not answer: typed in instead
                log.warning("demo: %s: %s; the patient is typed in instead", device, err.message)
                await desk.open_session(device, typed, technician)


def demo_config(
    workdir: Path,
    orthanc: OrthancProcess,
    listen_port: int,
    devices: list[DemoDevice],
    web_port: int,
    mqtt_port: int,
    worklist: bool = True,
) -> str:
    """The gateway configuration the demo runs with (``worklist``: Orthanc serves
    the demo's worklist too)."""
    sections = "".join(
        f"""
[[devices]]
name = "{device.name}"
{device.section}
"""
        for device in devices
    )
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

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
topic_prefix = "dermgate"
homeassistant_discovery = true

[web]
listen = "127.0.0.1:{web_port}"
{_worklist_section(orthanc) if worklist else ""}{sections}"""


def _worklist_section(orthanc: OrthancProcess) -> str:
    return f"""
[worklist]
ae_title = "{orthanc.aet}"
host = "127.0.0.1"
port = {orthanc.dicom_port}
modality = "{DEMO_MODALITY}"
window_days = 1
refresh = 60
"""


def _ledger_states(ledger_path: Path) -> dict[str, str]:
    """SOP Instance UID → state of every capture in the ledger."""
    if not ledger_path.exists():
        return {}
    conn = db.open_ledger(ledger_path, readonly=True)
    try:
        return sop_instance_states(conn)
    finally:
        conn.close()


_DELIVERED = {CaptureState.SENT, CaptureState.COMMITTED, CaptureState.PURGED}


@dataclass
class DemoOutcome:
    """What the watcher found: the exit code and how many objects reached Orthanc."""

    code: int = 1
    objects: int = 0


async def _watch(
    devices: list[DemoDevice],
    workdir: Path,
    orthanc: OrthancProcess,
    ledger_path: Path,
    captures: int | None,
    stop: asyncio.Event,
    outcome: DemoOutcome,
) -> None:
    """Keep the simulators going; with ``captures``, stop once all is in Orthanc."""
    loop = asyncio.get_running_loop()
    found: set[str] = set()
    warned: set[str] = set()
    while not stop.is_set():
        await asyncio.sleep(1.0)
        for device in devices:
            proc = device.proc
            if proc is None or proc.poll() is None or device.finished:
                if proc is None and loop.time() >= device.next_start:
                    device.start(workdir, captures, _SIM_TIMEOUT)
                continue
            if captures is not None:
                if proc.returncode != 0:
                    log.error(
                        "demo: the %s simulator failed (exit %d)", device.name, proc.returncode
                    )
                    stop.set()
                    return
                device.finished = True
                log.info("demo: every %s capture was acknowledged", device.name)
            else:
                device.proc = None
                device.next_start = loop.time() + _FOREVER_PAUSE
        try:
            ledger = await asyncio.to_thread(_ledger_states, ledger_path)
        except sqlite3.Error:
            continue
        for uid, state in ledger.items():
            if state == CaptureState.QUARANTINED and uid not in warned:
                warned.add(uid)
                log.warning("demo: a capture was quarantined (see dermgate spool list)")
            if (
                state in _DELIVERED
                and uid not in found
                and len(await asyncio.to_thread(orthanc.find_instances, uid)) > 0
            ):
                found.add(uid)
        outcome.objects = len(found)
        if captures is not None and all(d.finished for d in devices):
            if warned:
                stop.set()
                return
            if ledger and len(found) == len(ledger):
                outcome.code = 0
                stop.set()
                return


_SIM_TIMEOUT = 600.0


async def _run(
    workdir: Path,
    orthanc: OrthancProcess,
    config_path: Path,
    devices: list[DemoDevice],
    captures: int | None,
    timeout: float,
) -> DemoOutcome:
    from gateway.service.app import run_gateway

    config = load_config(config_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    outcome = DemoOutcome(code=0 if captures is None else 1)
    desks: list[ContextStage] = []
    started = asyncio.Event()

    def context_ready(stage: ContextStage) -> None:
        desks.append(stage)
        started.set()

    def gateway_done(_: object) -> None:  # refused at start (lock, lost ledger), or stopped
        stop.set()
        started.set()

    gateway = asyncio.create_task(
        run_gateway(config, stop, on_context=context_ready), name="gateway"
    )
    gateway.add_done_callback(gateway_done)
    await started.wait()
    if desks and not stop.is_set():  # the devices' patients, before any device sends
        await open_demo_sessions(desks[0], worklist=config.worklist is not None)
    watcher = asyncio.create_task(
        _watch(devices, workdir, orthanc, config.ledger_path(), captures, stop, outcome),
        name="watch",
    )
    try:
        async with asyncio.timeout(timeout if captures is not None else None):
            await stop.wait()  # not wait_for: 3.11's can swallow Ctrl-C's cancellation
    except TimeoutError:
        log.error("demo: timed out after %.0f s before every capture reached Orthanc", timeout)
        stop.set()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    await gateway
    return outcome


def run_demo(*, workdir: Path, captures: int | None, timeout: float) -> int:
    """Run the demo; the exit code of ``dermgate demo``."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    listen_port = free_port()
    worklist = worklist_plugin_available()
    worklists = workdir / "worklists"
    orthanc = OrthancProcess(
        workdir / "orthanc",
        modalities={"dermgate": (DEMO_AE, "127.0.0.1", listen_port)},
        plugins=(WORKLIST_PLUGIN,) if worklist else (),
        extra=orthanc_worklist_settings(worklists) if worklist else {},
    )
    if worklist:  # two patients scheduled for today (read by Orthanc on each C-FIND)
        write_demo_worklist(worklists, date.today(), station=DEMO_AE, modality=DEMO_MODALITY)
    else:
        log.warning("demo: Orthanc's worklist plugin is not installed; no worklist")
    try:
        orthanc.start()
    except (OSError, RuntimeError) as err:
        print(f"dermgate demo: cannot start Orthanc: {err}", file=sys.stderr)
        return 1
    broker = MosquittoProcess(workdir / "mosquitto")
    try:
        broker.start()
    except (OSError, RuntimeError) as err:
        orthanc.stop()
        print(f"dermgate demo: cannot start Mosquitto: {err}", file=sys.stderr)
        return 1
    devices = demo_devices(workdir)
    web_port = free_port()
    config_path = workdir / "dermgate.toml"
    config_path.write_text(
        demo_config(workdir, orthanc, listen_port, devices, web_port, broker.port, worklist),
        encoding="utf-8",
    )
    password = one_time_login(load_config(config_path).users_path())
    worklist_line = (
        f"  The worklist (2 patients):    dermgate worklist list --config {config_path}\n"
        if worklist
        else ""
    )
    ending = (
        f"Stops once {captures} captures of each device are in Orthanc."
        if captures
        else "Ctrl-C stops."
    )
    print(
        f"""
DermGate demo is running.
  The technician's page:        http://127.0.0.1:{web_port}/
    one-time login:             user "{DEMO_USER}", password "{password}"
  Orthanc Explorer (the PACS):  {orthanc.url}/app/explorer.html
  MQTT (fleet status):          mqtt://127.0.0.1:{broker.port}  topics dermgate/dermgate-demo/#
  Gateway configuration:        {config_path}
  Spool (captures, DICOM):      {workdir / "state" / "spool"}
  Simulated devices:            serial dermatoscope ({workdir / "ttyDERM0"}),
                                USB confocal microscope (emulated USB),
                                3D body scanner ({workdir / "scanner-exports"}),
                                clinical camera ({workdir / "camera-photos"})
  Watch the spool:              dermgate spool list --config {config_path}
{worklist_line}{ending}
""",
        flush=True,
    )
    started = time.monotonic()
    try:
        outcome = asyncio.run(_run(workdir, orthanc, config_path, devices, captures, timeout))
    except (StateLocked, LedgerLost, SpoolIdMarkDamaged) as refused:
        if isinstance(refused, LedgerLost):
            refused.config_file = str(config_path)
        print(f"dermgate demo: {refused}", file=sys.stderr)
        return 1
    finally:
        for device in devices:
            device.stop()
        orthanc.stop()
        broker.stop()
    if outcome.code == 0 and captures is not None:
        print(
            f"dermgate demo: {captures} captures of each of {len(devices)} devices in Orthanc "
            f"({outcome.objects} DICOM objects) after {time.monotonic() - started:.1f} s"
        )
    return outcome.code
