"""A template driver: the smallest complete DermGate driver, to copy.

Driver ``test-template`` serves the "TC-1", an imaginary camera that listens on a
Unix socket and offers each photo it takes as a JPEG. The folder is what a new
driver package needs, each file importing nothing of DermGate but
``gateway.driver_api``:

- ``protocol.py``: the wire format, sans-I/O (pure functions that build and parse
  frames; no sockets, no gateway), so it can be unit-tested and fuzzed alone;
- ``driver.py``: the driver class (registered in ``pyproject.toml``): connects,
  streams each offer into the gateway, says "saved" only once the gateway committed;
- ``simulator.py``: the device side of the wire, for ``dermgate simulate test-template``
  and the conformance kit, with the kit's faults (``--unplug-mid-transfer``,
  ``--garbage``, ``--reoffer``);
- ``conformance.py``: the adapter that tells ``dermgate conformance test-template``
  how to drive the simulator.

``broken.py`` is the same driver with one classic bug, to show what a failing
conformance check looks like; do not copy that one.
"""
