"""The box's checks, shared by ``dermgate check`` and the page's "Why isn't it sending?".

One module produces the results and both render them, so the CLI and the page never
disagree. Every check is blocking (network, subprocess, files: callers on the event
loop run them on a worker thread), never raises (a check that cannot tell says
"unknown" and why) and carries no patient data: host names, ports, AE titles, paths,
counts, dates.

- :mod:`.result`: :class:`~.result.CheckResult` and its statuses.
- :mod:`.run`: :func:`~.run.box_checks` (the configuration and the box, offline) and
  :func:`~.run.connect_checks` (every peer, over the network).
- :mod:`.dicom`: C-ECHO to each PACS (a refused connection, no answer, and which AE
  title a rejection names told apart), our commitment listener, the worklist SCP.
- :mod:`.tls`: a refused TLS handshake and the listener's TLS port.
- :mod:`.box`: state folder, devices' ports and folders, users file, clock, disk.
- :mod:`.certificates`: expiry of every certificate the box presents or trusts.
- :mod:`.services`: the MQTT broker and DICOMweb stores.
"""

__all__ = ["box", "certificates", "dicom", "result", "run", "services", "tls"]
