"""The reason files a folder driver writes beside the entries it refuses (``.refused/``)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

SUFFIX = b".reason.txt"


def reason_of(refused_dir: Path, name: bytes) -> str:
    """The reason file of a refused entry, found by the rule README documents:
    ``NAME.reason.txt``, or for a name too long for that, the start of the name,
    ``~``, 8 hex digits of the SHA-256 of the name's bytes, ``.reason.txt``."""
    base = os.fsencode(refused_dir)
    plain = name + SUFFIX
    if len(plain) <= 255:
        path = os.path.join(base, plain)
        assert os.path.isfile(path), f"no reason file for {name!r}"
    else:
        tag = b"~" + hashlib.sha256(name).hexdigest()[:8].encode() + SUFFIX
        found = [n for n in os.listdir(base) if n.endswith(tag) and name.startswith(n[: -len(tag)])]
        assert len(found) == 1, f"reason file of a long name: {found}"
        assert len(found[0]) <= 255
        path = os.path.join(base, found[0])
    with open(path, encoding="utf-8") as fh:
        return fh.read()
