"""Builds the gateway from its configuration and runs it under one supervisor.

Start-up order: spool folders and ledger (blocking, before anything else), then the
forwarders (one per destination), then the wrapping stage, then the device drivers,
so that nothing is accepted from a device before every later stage is serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from importlib.metadata import PackageNotFoundError, version

from gateway.capture import GatewayIdentity
from gateway.config import DermGateConfig
from gateway.devices.registry import find_driver
from gateway.forward.commitment import (
    CommitmentListener,
    CommitmentRequester,
    RetentionConfirmer,
)
from gateway.forward.forwarder import Forwarder
from gateway.spool import ledger as db
from gateway.spool.files import SpoolDirs
from gateway.spool.intake import InlineWrap, Intake
from gateway.spool.ledger import Ledger
from gateway.spool.purge import Purger
from gateway.spool.reconcile import reconcile
from gateway.spool.space import MIB, SpaceGuard
from gateway.supervise import Supervisor
from gateway.wrap import Wrapper

log = logging.getLogger(__name__)


def software_version() -> str:
    """The installed DermGate version."""
    try:
        return version("dermgate")
    except PackageNotFoundError:
        return "0+unknown"


async def run_gateway(config: DermGateConfig, stop: asyncio.Event) -> None:
    """Run the gateway until ``stop`` is set, then shut down in order."""
    dirs = SpoolDirs(config.spool_dir())
    await asyncio.to_thread(dirs.create)
    ledger = Ledger(config.ledger_path())
    await asyncio.to_thread(ledger.start)
    try:
        await ledger.call(reconcile, dirs)
        names = [d.name for d in config.destinations]
        await ledger.call(db.add_missing_deliveries, names, time.time())
        requesters = {
            d.name: CommitmentRequester(ledger, config.gateway.ae_title, d)
            for d in config.destinations
            if d.storage_commitment
        }
        confirmers = [
            RetentionConfirmer(ledger, d) for d in config.destinations if not d.storage_commitment
        ]
        forwarders = [
            Forwarder(
                ledger,
                dirs,
                config.gateway.ae_title,
                d,
                requesters[d.name].notify if d.name in requesters else lambda: None,
            )
            for d in config.destinations
        ]
        by_name = {f.name: f for f in forwarders}
        limits = {d.name: d.commitment_max_failures for d in config.destinations}
        listener = CommitmentListener(
            ledger,
            config.gateway.ae_title,
            config.gateway.listen_address,
            config.gateway.listen_port,
            max_failures=lambda name: limits.get(name, 1),
            on_resend=lambda name: by_name[name].notify() if name in by_name else None,
        )
        identity = GatewayIdentity(
            gateway_id=config.gateway.id,
            software_version=software_version(),
            station_name=config.gateway.id[:16],
        )

        def wrapped() -> None:
            for forwarder in forwarders:
                forwarder.notify()

        wrapper = Wrapper(ledger, dirs, identity, names, wrapped)
        space = SpaceGuard(dirs.root, config.spool.reserve_mb * MIB)
        inline = InlineWrap(wrapper.build, wrapper.destinations, wrapped) if names else None
        intake = Intake(ledger, dirs, wrapper.notify, space, inline)
        if not forwarders:
            log.warning("no destinations configured: captures are kept in the spool only")
        async with asyncio.TaskGroup() as group:
            supervisor = Supervisor(group)
            if requesters:
                # Reports may arrive before N-ACTION-RSP: listen before any request.
                await supervisor.start("commitment-listener", listener.run)
            for forwarder in forwarders:
                await supervisor.start(f"forward:{forwarder.name}", forwarder.run)
            for name, requester in requesters.items():
                await supervisor.start(f"commit:{name}", requester.run)
            for confirmer in confirmers:
                await supervisor.start(f"retain:{confirmer.destination.name}", confirmer.run)
            await supervisor.start("purge", Purger(ledger, dirs, config.spool).run)
            await supervisor.start("wrap", wrapper.run)
            for index, device in enumerate(config.devices):
                factory = find_driver(device.driver)
                options = factory.Options.model_validate(device.options())
                name = config.device_name(index)
                driver = factory(options, intake.host_for(device.driver, name), name)
                supervisor.start_restarting(f"device:{name}", driver.run)
            log.info(
                "DermGate %s running as %s: %d device(s), %d destination(s)",
                identity.software_version,
                config.gateway.id,
                len(config.devices),
                len(forwarders),
            )
            await stop.wait()
            log.info("stopping")
            await supervisor.stop()
    finally:
        await asyncio.to_thread(ledger.close)
        log.info("stopped")
