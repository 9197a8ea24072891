"""What a session's objects are called, and which sensitive codes they carry (pure).

Study Description: the worklist item's requested procedure, else a default per
device class. Series Description: the device class, the anatomic site's meaning
and the lesion label. Sensitive Content codes: the ``[[context.sensitive]]`` rules
whose sites contain the capture's site, and the ``flagged`` rules when a
technician flagged the session (a local default code when none is flagged).
"""

from __future__ import annotations

from typing import Final

from gateway.core.capture import DeviceClass
from gateway.core.config.context import SensitiveRule
from gateway.core.context import Coded, LesionContext
from gateway.dicom.modules import dermatology_site

__all__ = [
    "DEFAULT_STUDY_DESCRIPTION",
    "FLAGGED_CODE",
    "sensitive_codes",
    "series_description",
    "site_meaning",
    "study_description",
]

DEFAULT_STUDY_DESCRIPTION: Final[dict[DeviceClass, str]] = {
    DeviceClass.DERMATOSCOPE: "Dermoscopy",
    DeviceClass.CONFOCAL_MICROSCOPE: "Confocal microscopy",
    DeviceClass.BODY_SCANNER: "3D total body photography",
    DeviceClass.CAMERA: "Clinical photography",
}

#: Written on a flagged session's captures when no rule has ``flagged = true``.
FLAGGED_CODE: Final = Coded("FLAGGED", "99DGT", "Flagged sensitive by a technician")

_SERIES_DESCRIPTION_MAX = 64  # LO


def study_description(requested: str, device_class: DeviceClass) -> str:
    """The requested procedure's description, else the device class's default."""
    text = requested.strip()
    return text[:64] if text else DEFAULT_STUDY_DESCRIPTION[device_class]


def site_meaning(site: str | None, scheme: str = "SCT") -> str:
    """The CID 4029 meaning of an anatomic site code ("" when unknown)."""
    if not site or scheme != "SCT":
        return ""
    code = dermatology_site(site)
    return "" if code is None else str(code.meaning)


def series_description(
    device_class: DeviceClass, site: str | None, site_scheme: str, lesion_label: str | None
) -> str:
    """``Dermoscopy, Upper back, lesion L03`` (what is known of it), at most 64 characters."""
    parts = [DEFAULT_STUDY_DESCRIPTION[device_class]]
    meaning = site_meaning(site, site_scheme)
    if meaning:
        parts.append(meaning[:1].upper() + meaning[1:])
    if lesion_label:
        parts.append(f"lesion {lesion_label}")
    text = ", ".join(parts)
    return text[:_SERIES_DESCRIPTION_MAX].strip()


def sensitive_codes(
    rules: list[SensitiveRule], site: str | None, site_scheme: str, flagged: bool
) -> tuple[Coded, ...]:
    """The Sensitive Content Code Sequence items of a capture (no duplicates)."""
    codes: list[Coded] = []
    ref = f"{site_scheme}:{site}" if site else None
    for rule in rules:
        if ref is not None and ref in rule.sites:
            codes.append(Coded(rule.value, rule.scheme, rule.meaning))
    if flagged:
        chosen = [Coded(r.value, r.scheme, r.meaning) for r in rules if r.flagged]
        codes.extend(chosen or [FLAGGED_CODE])
    unique: list[Coded] = []
    for code in codes:
        if all((c.value, c.scheme) != (code.value, code.scheme) for c in unique):
            unique.append(code)
    return tuple(unique)


def capture_site(offer_site: str | None, lesion: LesionContext | None) -> tuple[str | None, str]:
    """The capture's anatomic site (value, scheme): the lesion's, else the device's."""
    if lesion is not None and lesion.site:
        return lesion.site, lesion.site_scheme
    return offer_site, "SCT"
