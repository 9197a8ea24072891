"""Seeded patients and the leak scanner that looks for them where they must not be.

Every seeded string (full name, each name part longer than two characters, the id,
the birth date as YYYYMMDD and YYYY-MM-DD) is searched case-insensitively, also
HTML-, URL- and JSON-escaped; a hit names where it was found and which field it
was, never the value.
"""

from __future__ import annotations

import html
import json
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from urllib.parse import unquote


@dataclass(frozen=True)
class Patient:
    """A seeded patient: DICOM PN, id, birth date as the manifest gives it."""

    name: str
    id: str
    birth_date: str

    def secrets(self, label: str) -> list[tuple[str, str]]:
        """(what it is, value) for every string that must not leave the DICOM objects."""
        found = [(f"{label} full name", self.name), (f"{label} id", self.id)]
        parts: list[str] = []
        for component in self.name.replace("=", "^").split("^"):
            parts.append(component)
            parts += component.replace("-", " ").split()
        for n, part in enumerate(dict.fromkeys(parts), 1):
            if len(part) > 2:
                found.append((f"{label} name part {n}", part))
        digits = self.birth_date.replace("-", "")
        found.append((f"{label} birth date YYYYMMDD", digits))
        found.append((f"{label} birth date YYYY-MM-DD", f"{digits[:4]}-{digits[4:6]}-{digits[6:]}"))
        return found


PATIENTS = (
    Patient("Müller-Łukasiewicz^Zoë", "PRV-7731902", "19470823"),
    Patient("長谷川^美穂子", "KX99-410-556", "19880229"),
    Patient("Vanderheyden^Quintus^Aurelius", "Q0042-77810", "20011105"),
)


# Refused: 13th month. Its manifest never becomes a capture, but its fields are seeded
# too: the refusal reason (file, log, events) must name the field, not the value.
REFUSED = Patient("Kowalczyk-Ørsted^Bartholomew", "RF-5512093", "1985-13-45")


def patient_secrets() -> list[tuple[str, str]]:
    found = [s for n, p in enumerate(PATIENTS, 1) for s in p.secrets(f"patient {n}")]
    return found + REFUSED.secrets("refused patient")


def _norm(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


class LeakScanner:
    """Searches texts for the seeded strings; collects where each hit was."""

    def __init__(self, secrets: list[tuple[str, str]]) -> None:
        self.needles: list[tuple[str, set[str]]] = []
        for label, value in secrets:
            forms = {_norm(value), _norm(json.dumps(value)[1:-1])}
            self.needles.append((label, forms))
        self.hits: list[str] = []
        self.scanned: dict[str, int] = defaultdict(int)

    def scan(self, where: str, text: str | bytes, kind: str) -> None:
        """Search ``text`` (plus its HTML- and URL-unescaped forms); ``kind`` counts sources."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        self.scanned[kind] += 1
        views = {_norm(text), _norm(html.unescape(text)), _norm(unquote(text))}
        for label, forms in self.needles:
            if any(form in view for form in forms for view in views):
                self.hits.append(f"{label} found in {where}")

    def assert_clean(self) -> None:
        """Fail listing every place a seeded string was found."""
        assert not self.hits, "patient data outside the DICOM objects:\n" + "\n".join(self.hits)
