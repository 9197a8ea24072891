"""Fixtures and helpers shared by the tests; tests import them from here and nowhere else.

``tests/conftest.py`` registers the modules that define fixtures, so a test names a
fixture (``orthanc``, ``gateway_factory``, ``mosquitto``, ...) as an argument without
importing it. What is where:

- ``gateway_process``: the gateway's test configuration and ``dermgate run`` as a child
- ``simulator``, ``usb_confocal``: device simulators as child processes
- ``peers``: Orthanc and the misbehaving pynetdicom PACS; ``mqtt``: Mosquitto and a recorder
- ``state``: read-only views of the ledger and the status files; ``waiting``: ``wait_for``
- ``spool``: a spool built without the service, and the ``dermgate spool`` commands
- ``dicom_files``, ``confocal_stacks``, ``confocal_iod``, ``dciodvfy``: DICOM inputs and checks;
  ``slide_viewer``: a whole-slide reader (highdicom) placing a mosaic's tiles
- ``photo_folder``, ``scanner_export``, ``refused``, ``images``: folder-driver inputs
- ``web``: the page's configuration, logins and TLS helpers; ``disk``: small filesystems;
  ``plugins``: a broken third-party plugin
"""
