"""Signed offline updates with a health gate and rollback (``dermgate-update``).

Owns the release tree (``/opt/dermgate``: ``releases/<version>/venv``, the ``current``
and ``previous`` symlinks, ``bad/<version>`` marks, the ``pending`` marker) and the
way a signed bundle becomes the running release: :mod:`.bundle` verifies and unpacks
a bundle, :mod:`.releases` builds and switches releases, :mod:`.gate` waits for the
service to be idle and runs the health gate, :mod:`.cli` is the command.

Standard library only, and nothing else from ``gateway``: the updater must work when
the service's venv is broken (that is when it is needed), so it is shipped as a
zipapp (``dermgate-update``) run by the system's ``python3``, outside any release.
"""
