"""The driver SDK: the only module a device driver imports from DermGate.

What is exported here is the contract between the gateway and a driver; anything
else in ``gateway`` may change without notice (a test and the import contract keep
``drivers/`` to this module). A driver checks :data:`CONTRACT_VERSION` if it relies
on something added after version 1.

What a driver finds here:

* **The contract** (:mod:`gateway.devices.contract`): a driver class is a
  :class:`DriverFactory` of its options model; :class:`BaseDriver` ``[MyOptions]``
  is the usual base (``self.options`` typed ``MyOptions``, ``self.host``,
  ``self.name``). A running driver streams each capture into the
  :class:`CaptureSink` that :meth:`DeviceHost.begin_capture` gives it and tells the
  device "saved" only after :meth:`CaptureSink.commit` returned a
  :class:`CaptureReceipt`; a :class:`CaptureRefused` carries the
  :class:`RefusalReason` to tell the device. It reports its :class:`DriverState`
  with :meth:`DeviceHost.set_state`. :class:`UsbMatch` and :class:`SerialMatch`
  (:data:`Matcher`) declare the devices it serves for hotplug.
* **What a capture is** (:mod:`gateway.core.capture`): :class:`DeviceIdentity` (cleans
  what a device reports), :class:`CaptureOffer` with its :class:`ContentType`,
  :class:`InstanceUIDs` and :class:`PatientContext` when a device names them, and the
  dermoscopy vocabulary (:class:`DermoscopySettings`, :class:`Polarization`,
  :class:`ContactMethod`, :class:`ImmersionMedium`, :class:`Laterality`).
* **What a driver may know of DICOM** (:mod:`gateway.dicom.for_drivers`): the typed
  ``offer.extra`` of photos (:class:`PhotoExtra`, :class:`ExifFields`), confocal
  stacks (:class:`ConfocalStack`, :class:`RowMajorTiles`) and 3D exports
  (:class:`ModelFileLinks`); :func:`check_can_carry` (:class:`CannotCarry`,
  :class:`UnreadableImage`), the one "can DICOM carry this file" check; and
  :func:`plan_model_export`, the UIDs and links of a 3D export's files. A driver
  never picks a SOP class or derives a UID itself.
* **Helpers**: :class:`Backoff` (capped, jittered reconnect delays); drop folders
  for devices that deliver files (:class:`DropFolder`, :class:`FolderEvents`,
  :func:`open_regular`, :func:`special_kind`, :func:`too_large`); and for the
  simulator a driver ships (``dermgate simulate DRIVER``): :class:`Simulator`,
  :func:`run_simulator`, :func:`write_report`; and the simulator hook that
  ``dermgate conformance DRIVER`` runs the conformance kit through
  (:class:`SimulatorAdapter`, :class:`SimulatorReport`, :class:`Fault`,
  :data:`DEVICE_NAME`; see :mod:`gateway.devices.simulator_hook`).
"""

from __future__ import annotations

from gateway.core.backoff import Backoff
from gateway.core.capture import (
    CaptureOffer,
    ContactMethod,
    ContentType,
    DermoscopySettings,
    DeviceClass,
    DeviceIdentity,
    ImmersionMedium,
    InstanceUIDs,
    Laterality,
    PatientContext,
    Polarization,
)
from gateway.devices.contract import (
    BaseDriver,
    CaptureReceipt,
    CaptureRefused,
    CaptureSink,
    DeviceHost,
    Driver,
    DriverFactory,
    DriverState,
    Matcher,
    OptionsT,
    RefusalReason,
    SerialMatch,
    UsbMatch,
)
from gateway.devices.folder_events import FolderEvents
from gateway.devices.folders import (
    ONLY_REGULAR_FILES,
    DropFolder,
    EntrySnapshot,
    NotARegularFile,
    open_regular,
    special_kind,
    too_large,
)
from gateway.devices.simulation import (
    Simulator,
    add_lesion_options,
    run_simulator,
    write_report,
)
from gateway.devices.simulator_hook import (
    DEVICE_NAME,
    Fault,
    SimulatorAdapter,
    SimulatorReport,
)
from gateway.dicom.for_drivers import (
    DEFAULT_MAX_PIXELS,
    MAX_FRAMES,
    MAX_NATIVE_PIXELS,
    CannotCarry,
    ConfocalStack,
    ExifFields,
    LinkedInstance,
    ModelFile,
    ModelFileLinks,
    ModelRole,
    PhotoExtra,
    PlannedModelFile,
    RowMajorTiles,
    UnreadableImage,
    check_can_carry,
    model_role,
    plan_model_export,
)

#: Bumped when the contract changes in a way a driver can notice.
CONTRACT_VERSION = 1

__all__ = [
    "CONTRACT_VERSION",
    "DEFAULT_MAX_PIXELS",
    "DEVICE_NAME",
    "MAX_FRAMES",
    "MAX_NATIVE_PIXELS",
    "ONLY_REGULAR_FILES",
    "Backoff",
    "BaseDriver",
    "CannotCarry",
    "CaptureOffer",
    "CaptureReceipt",
    "CaptureRefused",
    "CaptureSink",
    "ConfocalStack",
    "ContactMethod",
    "ContentType",
    "DermoscopySettings",
    "DeviceClass",
    "DeviceHost",
    "DeviceIdentity",
    "Driver",
    "DriverFactory",
    "DriverState",
    "DropFolder",
    "EntrySnapshot",
    "ExifFields",
    "Fault",
    "FolderEvents",
    "ImmersionMedium",
    "InstanceUIDs",
    "Laterality",
    "LinkedInstance",
    "Matcher",
    "ModelFile",
    "ModelFileLinks",
    "ModelRole",
    "NotARegularFile",
    "OptionsT",
    "PatientContext",
    "PhotoExtra",
    "PlannedModelFile",
    "Polarization",
    "RefusalReason",
    "RowMajorTiles",
    "SerialMatch",
    "Simulator",
    "SimulatorAdapter",
    "SimulatorReport",
    "UnreadableImage",
    "UsbMatch",
    "add_lesion_options",
    "check_can_carry",
    "model_role",
    "open_regular",
    "plan_model_export",
    "run_simulator",
    "special_kind",
    "too_large",
    "write_report",
]
