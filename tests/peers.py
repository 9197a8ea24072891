"""Real pynetdicom peers that misbehave on purpose."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.sop_class import DermoscopicPhotographyImageStorage

from gateway.local_orthanc import free_port

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


@dataclass
class MisbehavingPacs:
    """A pynetdicom storage SCP whose answers are scripted per C-STORE."""

    script: list[Any]
    port: int = field(default_factory=free_port)
    received: list[str] = field(default_factory=list)
    server: Any = None

    def handle_store(self, event: Any) -> Any:
        action = self.script.pop(0) if self.script else 0x0000
        if action == "abort":
            event.assoc.abort()
            return 0x0000
        if action == "silence":
            threading.Event().wait(4)
            return 0x0000
        if action in (0x0000, 0xB000):
            self.received.append(str(event.request.AffectedSOPInstanceUID))
        return action

    def start(self, *, accept_dermoscopy: bool = True) -> None:
        ae = AE(ae_title="MISBEHAVE")
        if accept_dermoscopy:
            ae.add_supported_context(DermoscopicPhotographyImageStorage, JPEG_BASELINE)
        else:
            ae.add_supported_context("1.2.840.10008.5.1.4.1.1.7", JPEG_BASELINE)
        self.server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self.handle_store)],
        )

    def reject_associations(self, reject: bool) -> None:
        """Reject (or accept again) every association request from now on."""
        assert self.server is not None
        self.server.ae.require_calling_aet = ["NOT-YOU"] if reject else []

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
