"""What the ``dermgate`` commands write under ``state_dir`` belongs to the service.

The README runs ``dermgate user add`` as root while the service runs as its own
user (``dermgate``): a file, or a folder, that root creates there would be closed
to the service (the page then could not read its logins). So a command running as
root gives what it creates or rewrites the owner and group of ``state_dir``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["hand_over", "missing_folders", "owned_like", "state_owner"]


def state_owner(state_dir: Path) -> tuple[int, int] | None:
    """``(uid, gid)`` of ``state_dir`` when running as root; None otherwise (a
    normal user's files are already its own) or when ``state_dir`` is missing."""
    if os.geteuid() != 0:
        return None
    try:
        st = os.stat(state_dir)
    except OSError:
        return None
    return st.st_uid, st.st_gid


def hand_over(path: Path, state_dir: Path, owner: tuple[int, int] | None) -> None:
    """Give ``path`` and every folder between ``state_dir`` and it to ``owner``
    (``state_dir`` itself is left alone).

    A path outside ``state_dir`` (a ``users_file`` set elsewhere) is given over
    alone, never its folder. Links are never followed. Raises OSError.
    """
    if owner is None:
        return
    try:
        parts = path.relative_to(state_dir).parts
    except ValueError:
        targets = [path]
    else:
        targets = [state_dir.joinpath(*parts[: i + 1]) for i in range(len(parts))]
    for target in targets:
        os.chown(target, *owner, follow_symlinks=False)


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
