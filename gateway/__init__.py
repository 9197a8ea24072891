"""DermGate: an edge gateway that brings dermatology imaging devices into the PACS.

The packages are the stages of a capture's way through the box, in layers (see
docs/architecture.md; import-linter keeps them in ``pyproject.toml``)::

    cli > conformance > demo > service > status > forward | wrap | intake
        > driver_api > devices | dicom | spool > core

Drivers (the ``drivers`` package and third-party plugins) import only
:mod:`gateway.driver_api`.
"""
