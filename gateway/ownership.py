"""Files an administrator's command writes belong to the service, not to root.

The README runs commands such as ``dermgate spool show --reveal`` (which appends to
the audit log) or ``dermgate spool rebuild`` as root, while the service runs as its
own user. A file such commands create in the state folder must then be owned like
the state folder itself, or the service later fails to write it.
"""

from __future__ import annotations

import os
from pathlib import Path


def owned_like(reference: Path, *paths: Path) -> None:
    """Run as root, give each of ``paths`` the owner and group of ``reference``.

    Does nothing for any other user (their files are theirs, as the service's are).
    Raises :class:`OSError`.
    """
    if os.geteuid() != 0:
        return
    owner = reference.stat()
    for path in paths:
        info = path.stat()
        if (info.st_uid, info.st_gid) != (owner.st_uid, owner.st_gid):
            os.chown(path, owner.st_uid, owner.st_gid)


def missing_folders(path: Path) -> list[Path]:
    """The folders above ``path`` that do not exist yet (nearest first)."""
    return [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
