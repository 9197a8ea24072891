"""Registers the fixture modules of ``tests/support`` and the Hypothesis profiles.

Fixtures that start real peers (Orthanc, Mosquitto, the gateway, the device
simulators) and every helper live in ``tests/support``; tests import helpers from
there and name fixtures as arguments. A peer that the README's setup installs
(Orthanc, dciodvfy) makes a test fail, never skip, when it is missing.
"""

from __future__ import annotations

import os

from hypothesis import settings

pytest_plugins = [
    "tests.support.disk",
    "tests.support.gateway_process",
    "tests.support.http_auth",
    "tests.support.mpps_scp",
    "tests.support.mqtt",
    "tests.support.peers",
    "tests.support.simulator",
    "tests.support.spool",
    "tests.support.usb_confocal",
    "tests.support.worklist",
    "tests.support.dicomweb",  # after spool: it imports it
]

# Hypothesis profiles: "ci" (default) keeps the suite fast; "slow" is the deep fuzz
# run (tens of thousands of examples): HYPOTHESIS_PROFILE=slow scripts/test.sh -k fuzz
settings.register_profile("ci", max_examples=300, deadline=None)
settings.register_profile("slow", max_examples=30000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
