"""Test-only DermGate drivers shipped as a third-party plugin package.

Installed by ``scripts/setup.sh --test`` (``pip install -e`` of this folder); found
by the gateway through the ``dermgate.drivers`` entry-point group exactly as a
vendor's driver package would be. They misbehave on purpose; never configure them
on a box.
"""
