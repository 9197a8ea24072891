"""Builds the gateway from its configuration and runs it under one supervisor.

Start-up order: the state folder's lock (one service per ``state_dir``, see
:mod:`gateway.service.state_lock`), a check that the ledger was not lost while the spool holds
captures (:mod:`gateway.spool.rebuild`) and that the spool id mark is readable
(:mod:`gateway.spool.spool_ids`), spool folders and ledger (blocking, before
anything else), then the forwarders (one per destination), then the wrapping stage,
then the device drivers, so that nothing is accepted from a device before every
later stage is serving.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from gateway.context.stage import ContextStage
from gateway.context.worklist_source import WorklistSource
from gateway.core.busy import use_runtime_directory
from gateway.core.capture import GatewayIdentity
from gateway.core.config import DermGateConfig
from gateway.core.events import EventBus
from gateway.core.routing import RoutePlan
from gateway.devices.contract import DriverFactory, DriverState
from gateway.devices.host import DriverHost
from gateway.devices.hotplug import (
    DeviceEvent,
    HotplugManager,
    HotplugSlot,
    fill_devnode,
    source_from_config,
)
from gateway.devices.registry import BrokenDriver, find_driver
from gateway.devices.status import StatusBoard
from gateway.dicom.tls import server_context
from gateway.forward.bucket import bucket_for
from gateway.forward.commitment import (
    CommitmentListener,
    CommitmentRequester,
    RetentionConfirmer,
)
from gateway.forward.forwarder import Forwarder
from gateway.forward.overdue import CommitmentOverdueWatch
from gateway.intake import InlineWrap, Intake
from gateway.service.clock import ClockWatch
from gateway.service.lean import release_start_up_memory
from gateway.service.reroute import route_again
from gateway.service.sd_notify import ServiceNotifier
from gateway.service.state_lock import StateLock
from gateway.service.supervise import DriverTask, RestartPolicy, Supervisor
from gateway.spool.dirs import SpoolDirs
from gateway.spool.ledger import Ledger
from gateway.spool.purge import Purger
from gateway.spool.rebuild import refuse_spool_without_ledger
from gateway.spool.reconcile import reconcile
from gateway.spool.reserve import RESERVE_NAME, LedgerReserve, reserve_size
from gateway.spool.space import MIB, SpaceGuard
from gateway.spool.spool_ids import (
    SpoolIdCounter,
    high_water_path,
    highest_spool_id,
    read_high_water,
)
from gateway.status.ha_discovery import page_url
from gateway.status.pi_health import HealthMonitor
from gateway.status.snapshot import GatewayState
from gateway.status.web.fleet import document_verdict
from gateway.status.web.live import live_view
from gateway.wrap import Wrapper

if TYPE_CHECKING:  # the optional stages are imported when configured (idle RSS)
    from gateway.forward.readback import ReadBack
    from gateway.forward.stow import StowSender

log = logging.getLogger(__name__)


def software_version() -> str:
    """The installed DermGate version."""
    try:
        return version("dermgate")
    except PackageNotFoundError:
        return "0+unknown"


def restart_policy(config: DermGateConfig) -> RestartPolicy:
    """The ``[supervision]`` settings as the supervisor takes them."""
    s = config.supervision
    return RestartPolicy(
        initial=s.restart_initial,
        cap=s.restart_max,
        quarantine_after=s.quarantine_after,
        quarantine_window=s.quarantine_window,
        hang_timeout=s.hang_timeout,
    )


class _Devices:
    """Builds and starts the configured devices' drivers.

    Devices without ``hotplug`` start at once and run for as long as the gateway
    does; hotplug devices start when the hotplug manager calls :meth:`launch`. A
    device whose driver plugin fails to load is shown QUARANTINED (logged once)
    and the others run on.
    """

    def __init__(
        self, config: DermGateConfig, intake: Intake, board: StatusBoard, supervisor: Supervisor
    ) -> None:
        self.config = config
        self.intake = intake
        self.board = board
        self.supervisor = supervisor
        self.policy = restart_policy(config)
        self.factories: dict[int, DriverFactory[Any]] = {}

    def start_all(self) -> list[HotplugSlot]:
        """Start every static device; return the hotplug-managed ones."""
        slots = []
        for index, device in enumerate(self.config.devices):
            name = self.config.device_name(index)
            self.board.add(name, device.driver, hotplug=device.hotplug)
            try:
                factory = find_driver(device.driver)
            except BrokenDriver as err:
                log.error("device %s: %s; this device stays stopped", name, err)
                self.board.update(
                    name, state=DriverState.QUARANTINED, detail=f"driver failed to load: {err}"
                )
                continue
            self.factories[index] = factory
            if device.hotplug:
                self.board.update(name, detail="waiting for the device to appear")
                slots.append(
                    HotplugSlot(
                        index, name, factory.matchers, device.usb_serial, device.match_devnode
                    )
                )
            else:
                self.start(index, None)
        return slots

    def start(self, index: int, devnode: str | None) -> DriverTask | None:
        """Start the driver of device ``index`` (serving ``devnode`` if hotplugged)."""
        device = self.config.devices[index]
        name = self.config.device_name(index)
        factory = self.factories[index]
        try:
            options = factory.Options.model_validate(fill_devnode(device.options(), devnode))
        except ValueError as err:  # pydantic's ValidationError is a ValueError
            log.error("device %s: options invalid for %s: %s", name, devnode, err)
            self.board.update(name, state=DriverState.ERROR, detail=f"options invalid ({devnode})")
            return None
        begin = functools.partial(
            self.intake.begin,
            device.driver,
            issuer_of_patient_id=device.issuer_of_patient_id,
            device_name=name,
        )
        host = DriverHost(name, begin, self.board, self.intake.max_capture_bytes)
        self.board.update(name, devnode=devnode)

        async def run() -> None:
            await factory(options, host, name).run()

        return self.supervisor.start_driver(name, run, host, self.board, self.policy)

    async def launch(self, slot: HotplugSlot, event: DeviceEvent) -> DriverTask | None:
        """The hotplug manager's way to start a device that appeared."""
        return self.start(slot.index, event.devnode)


async def run_gateway(
    config: DermGateConfig,
    stop: asyncio.Event,
    *,
    on_context: Callable[[ContextStage], None] | None = None,
) -> None:
    """Run the gateway until ``stop`` is set, then shut down in order.

    Raises :class:`~gateway.service.state_lock.StateLocked` (another service holds the state
    folder) or :class:`~gateway.spool.rebuild.LedgerLost` before touching anything.
    ``on_context`` is given the context stage once built (in-process tests open
    patient sessions through it).
    """
    lock = await asyncio.to_thread(StateLock.acquire, config.gateway.state_dir)
    use_runtime_directory()  # the busy lock dermgate-update waits for (gateway/core/busy.py)
    try:
        await asyncio.to_thread(
            refuse_spool_without_ledger, config.ledger_path(), SpoolDirs(config.spool_dir())
        )
        # A damaged spool id mark refuses here too (SpoolIdMarkDamaged), before anything.
        await asyncio.to_thread(read_high_water, high_water_path(config.gateway.state_dir))
        await _run_locked(config, stop, on_context)
    finally:
        lock.release()  # (the process ends right after; closing the file drops the lock)


def _notify(forwarders: dict[str, Forwarder], name: str) -> None:
    """Wake destination ``name``'s forwarder (something is due again)."""
    forwarder = forwarders.get(name)
    if forwarder is not None:
        forwarder.notify()


async def _run_locked(
    config: DermGateConfig,
    stop: asyncio.Event,
    on_context: Callable[[ContextStage], None] | None = None,
) -> None:
    dirs = SpoolDirs(config.spool_dir())
    await asyncio.to_thread(dirs.create)
    reserve = LedgerReserve(
        config.gateway.state_dir / RESERVE_NAME, reserve_size(config.spool.reserve_mb * MIB)
    )
    ledger = Ledger(config.ledger_path(), reserve)
    # The event bus (MQTT, the local page, metrics), handed to every stage that reports.
    bus = EventBus()
    bus.bind(asyncio.get_running_loop())
    await asyncio.to_thread(ledger.start)
    try:
        await ledger.call(reconcile, dirs)
        spool_ids = await asyncio.to_thread(
            SpoolIdCounter.open,
            high_water_path(config.gateway.state_dir),
            await ledger.call(highest_spool_id),
        )
        names = [d.name for d in config.destinations]
        plan = RoutePlan.from_config(config)
        await route_again(ledger, plan)
        dicom = config.dicom_destinations()
        requesters = {
            d.name: CommitmentRequester(ledger, config.gateway.ae_title, d)
            for d in dicom
            if d.storage_commitment
        }
        confirmers = [RetentionConfirmer(ledger, d) for d in dicom if not d.storage_commitment]
        # DICOMweb stores: STOW-RS, confirmed by read-back (QIDO-RS); one sender each,
        # shared by its forwarder and its read-back (one token cache).
        stow: dict[str, StowSender] = {}
        readbacks: dict[str, ReadBack] = {}
        if config.dicomweb_destinations():  # aiohttp's client only for DICOMweb
            from gateway.forward.readback import ReadBack
            from gateway.forward.stow import StowSender

            stow = {
                d.name: StowSender(d, bucket=bucket_for(d.max_mbps))
                for d in config.dicomweb_destinations()
            }
        by_name: dict[str, Forwarder] = {}
        readbacks = {
            d.name: ReadBack(
                ledger, d, stow[d.name], functools.partial(_notify, by_name, d.name), bus
            )
            for d in config.dicomweb_destinations()
        }
        sent_hooks: dict[str, Callable[[], None]] = {n: r.notify for n, r in requesters.items()}
        sent_hooks.update((n, r.notify) for n, r in readbacks.items())
        forwarders = [
            Forwarder(
                ledger,
                dirs,
                config.gateway.ae_title,
                d,
                sent_hooks.get(d.name, lambda: None),
                bus,
                sender=stow.get(d.name),
            )
            for d in config.destinations
        ]
        by_name.update((f.name, f) for f in forwarders)
        overdue = {
            d.name: CommitmentOverdueWatch(
                ledger, d, config.gateway.ae_title, config.gateway.listen_port, bus
            )
            for d in dicom
            if d.storage_commitment
        }
        limits = {d.name: d.commitment_max_failures for d in dicom}
        g = config.gateway
        listen_tls = None
        if g.listen_tls_cert is not None and g.listen_tls_key is not None:
            listen_tls = (
                g.listen_tls_port,
                await asyncio.to_thread(
                    server_context, g.listen_tls_cert, g.listen_tls_key, g.listen_tls_ca
                ),
            )
        listener = CommitmentListener(
            ledger,
            config.gateway.ae_title,
            config.gateway.listen_address,
            config.gateway.listen_port,
            max_failures=lambda name: limits.get(name, 1),
            on_resend=lambda name: by_name[name].notify() if name in by_name else None,
            destinations=[d for d in dicom if d.storage_commitment],
            on_report=lambda name: overdue[name].reported() if name in overdue else None,
            admit_from=dicom,
            bus=bus,
            tls=listen_tls,
        )
        identity = GatewayIdentity(
            gateway_id=config.gateway.id,
            software_version=software_version(),
            station_name=config.gateway.id[:16],
        )
        # MPPS (optional): the context stage reports a worklist session's first capture
        # and its end to it (gateway.context.desk.ProcedureStepHooks); it sends them.
        steps = None
        if config.worklist is not None and config.worklist.mpps:
            from gateway.context.mpps import ProcedureSteps

            steps = ProcedureSteps(
                ledger,
                config.worklist,
                config.gateway.ae_title,
                bus,
                station_name=identity.station_name,
            )

        def wrapped() -> None:
            for forwarder in forwarders:
                forwarder.notify()

        wrapper = Wrapper(ledger, dirs, identity, plan, wrapped, bus)
        space = SpaceGuard(dirs.root, config.spool.reserve_mb * MIB, ledger, bus)
        inline = InlineWrap(identity, wrapper.destinations, wrapped) if names else None

        async def reserve_spool_id() -> int:  # the intake's ids: never handed out twice
            return await intake.reserve_spool_id()

        # Patient sessions: intake asks it which patient each capture belongs to.
        worklist_source = (
            None
            if config.worklist is None
            else WorklistSource(ledger, config.worklist, config.gateway.ae_title, bus)
        )

        def wake_all() -> None:  # a flag routed a capture again: new deliveries may be due
            wrapper.notify()
            wrapped()

        context = ContextStage(
            ledger,
            config,
            config.gateway.id,
            bus,
            wake_all,
            reserve_spool_id,
            steps=steps,
            worklist=worklist_source,
        )
        if on_context is not None:  # in-process tests reach the desk this way
            on_context(context)
        intake = Intake(
            ledger,
            dirs,
            wrapper.notify,
            space,
            inline,
            config.spool.max_capture_mb * MIB,
            spool_ids,
            bus,
            context,
        )
        board = StatusBoard(config.status_path(), bus)
        # The state document (MQTT, the local page, metrics).
        gateway_state = GatewayState(
            gateway_id=config.gateway.id,
            software=identity.software_version,
            ledger=ledger,
            space=space,
            board=board,
            forwarders=forwarders,
            bus=bus,
            configured=names,
        )
        # The worklist cache (refreshed from [worklist]'s SCP); sessions search it.
        if worklist_source is not None:
            gateway_state.sections["worklist"] = worklist_source.section
        if steps is not None:
            gateway_state.sections["mpps"] = steps.status
        health = HealthMonitor(bus)  # the box's temperature, supply, storage wear
        gateway_state.sections["health"] = health.section
        if not forwarders:
            log.warning("no destinations configured: captures are kept in the spool only")
        async with asyncio.TaskGroup() as group:
            supervisor = Supervisor(group)
            # systemd (Type=notify): watchdog pings from this loop while every stage runs;
            # started first so that it is stopped last (pings go on while draining).
            notifier = ServiceNotifier(bus, supervisor.healthy)
            await supervisor.start("sd-notify", notifier.run)
            await supervisor.start("space", space.watch)  # the disk_full alarm, the reserve
            await supervisor.start("clock", ClockWatch(bus).run)  # clock_not_synchronised
            if requesters:
                # Reports may arrive before N-ACTION-RSP: listen before any request.
                await supervisor.start("commitment-listener", listener.run)
            for forwarder in forwarders:
                await supervisor.start(f"forward:{forwarder.name}", forwarder.run)
            for name, requester in requesters.items():
                await supervisor.start(f"commit:{name}", requester.run)
            for name, watch in overdue.items():
                await supervisor.start(f"commit-overdue:{name}", watch.run)
            for confirmer in confirmers:
                await supervisor.start(f"retain:{confirmer.destination.name}", confirmer.run)
            for name, readback in readbacks.items():
                await supervisor.start(f"read-back:{name}", readback.run)
            await supervisor.start("purge", Purger(ledger, dirs, config.spool).run)
            await supervisor.start("wrap", wrapper.run)
            await supervisor.start("context", context.run)  # holds expire
            if steps is not None:
                await supervisor.start("mpps", steps.run)
            await supervisor.start("status", board.run)
            await supervisor.start("health", health.run)
            if worklist_source is not None:  # ready once the cache is read, before a query
                await supervisor.start("worklist", worklist_source.run)
            # A scan opens its device's session on the context stage; the page shows
            # the scans that opened nothing.
            barcodes = None
            if config.barcodes:
                from gateway.context.barcode.stage import BarcodeStage

                barcodes = BarcodeStage(config.barcodes, context, bus)
                await supervisor.start("barcodes", barcodes.run)
            if config.mqtt is not None:  # aiomqtt only with [mqtt]
                from gateway.status.mqtt import MqttPublisher

                mqtt = MqttPublisher(
                    config.mqtt,
                    gateway_state,
                    bus,
                    verdict=document_verdict(config),
                    configuration_url=page_url(config.web),
                )
                await supervisor.start("mqtt", mqtt.run)
            if config.web is not None:  # the technicians' page, /healthz, /metrics
                from gateway.status.web.server import WebServer  # aiohttp, prometheus-client

                def poke() -> None:  # a retry from the page: look at the ledger now
                    wrapper.notify()
                    wrapped()

                page = WebServer(
                    config,
                    functools.partial(live_view, gateway_state),
                    poke,
                    desk=context,
                    scans=barcodes.recent if barcodes is not None else None,
                )
                await supervisor.start("web", page.run)
            devices = _Devices(config, intake, board, supervisor)
            slots = devices.start_all()
            source = source_from_config(config.hotplug.source)
            if source is not None:
                manager = HotplugManager(source, slots, devices.launch)
                await supervisor.start("hotplug", manager.run)
            await board.write_now()  # pages, MQTT and tests read every device from it
            log.info(
                "DermGate %s running as %s: %d device(s), %d destination(s)",
                identity.software_version,
                config.gateway.id,
                len(config.devices),
                len(forwarders),
            )
            notifier.ready()
            release_start_up_memory()  # the start-up's freed heap back to the system
            await stop.wait()
            log.info("stopping")
            notifier.stopping()
            await supervisor.stop()
            try:
                await asyncio.to_thread(spool_ids.close)  # no capture left: record the exact next
            except OSError as err:  # a full disk: the mark on disk is ahead, ids skip a few
                log.warning("cannot record the next spool id (%s)", err.strerror or err)
    finally:
        await asyncio.to_thread(ledger.close)
        log.info("stopped")
