"""The privacy proof's leak scanner finds a seeded string also escaped and recased.

The proof itself (every side door of a real ``dermgate run``) is in
``tests/e2e/test_privacy.py``.
"""

from __future__ import annotations

import html
import json
import unicodedata
from urllib.parse import quote

from tests.support.privacy import PATIENTS, LeakScanner, patient_secrets


def test_the_leak_scanner_sees_escaped_and_recased_forms() -> None:
    """The search above would find a leak written escaped, re-cased or decomposed."""
    patient = PATIENTS[0]
    leaks = {
        "json": json.dumps({"n": patient.name}),
        "html": html.escape(patient.name).replace("ü", "&uuml;"),
        "url": "/x?name=" + quote(patient.name.split("^")[1]),
        "upper": patient.name.split("^")[0].upper(),
        "nfd": unicodedata.normalize("NFD", patient.name.split("^")[1]),
        "dashed date": "born 1947-08-23",
        "id in a sentence": f"id={patient.id};",
    }
    for where, text in leaks.items():
        scanner = LeakScanner(patient.secrets("patient 1"))
        scanner.scan(where, text, "self-test")
        assert scanner.hits, f"{where}: not found"
        assert all(patient.name not in hit for hit in scanner.hits)
    clean = LeakScanner(patient_secrets())
    clean.scan("an ordinary line", "spool id 12 delivered to pacs (C-STORE status 0x0000)", "t")
    clean.assert_clean()
