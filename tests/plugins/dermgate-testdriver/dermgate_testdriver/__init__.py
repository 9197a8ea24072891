"""Test-only DermGate drivers shipped as a third-party plugin package.

Installed by ``scripts/setup.sh --test`` (``pip install -e`` of this folder); found
by the gateway through the ``dermgate.drivers`` entry-point group exactly as a
vendor's driver package would be.

- ``template/``: ``test-template``, a minimal working driver with its simulator and
  conformance adapter, the one to copy when writing a driver (and
  ``test-template-broken``, the same with one bug, which the kit catches);
- ``drivers.py``: ``test-crasher``, ``test-hanger``, ``test-stubborn`` and
  ``test-wedger`` (blocks the event loop: the systemd watchdog test), which misbehave
  on purpose for the supervision tests; never configure them on a box.
"""
