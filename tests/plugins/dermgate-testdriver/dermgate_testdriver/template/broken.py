"""Driver ``test-template-broken``: the template with one classic bug. Do not copy.

It names each photo by a count of the offers it received instead of by the device's
own capture id. Everything looks fine until the device offers a photo again (its
"saved" was lost, or it was unplugged): the gateway cannot recognise the re-offer and
the PACS gets a second object. ``dermgate conformance test-template-broken --check
reoffer`` fails, naming the check, and exits 1.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from gateway.driver_api import CaptureOffer

from . import protocol
from .driver import TemplateDriver


class BrokenTemplateDriver(TemplateDriver):
    """Driver ``test-template-broken``: capture ids from a counter (the bug)."""

    id: ClassVar[str] = "test-template-broken"
    offers: int = 0

    def capture_offer(self, offer: protocol.Offer) -> CaptureOffer:
        """The template's offer under a fresh id every time: a re-offer is not recognised."""
        self.offers += 1
        good = super().capture_offer(offer)
        return dataclasses.replace(good, device_capture_id=f"{offer.capture_id}-{self.offers}")
