"""The context stage: which patient, order and lesion each capture belongs to.

It owns the worklist (queries the Modality Worklist SCP, keeps the cache in the
ledger), patient sessions (a device bound to a patient context from a worklist item,
a barcode scan, typed demographics or "unidentified"), captures held for want of a
patient and their assignment, the lesion registry, barcode scanners and MPPS. Intake
asks it for each capture's binding (:class:`gateway.core.context.ContextBinder`);
the page and the API (:mod:`gateway.status.web`) drive it; its SQL lives in
:mod:`gateway.spool`, the attributes it puts into objects in :mod:`gateway.dicom`.
"""
