"""The self-contained demo: simulated devices, a local Orthanc and Mosquitto, the box.

Above the service in the layers (it starts one); only the CLI imports it. Also the
peers the demo and the tests start: :mod:`.local_orthanc`, :mod:`.local_mosquitto`.
"""

__all__ = [
    "local_mosquitto",
    "local_orthanc",
    "run",
]
