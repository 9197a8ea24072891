"""Every look at patient data is audited: ``dermgate spool show --reveal`` and
``export`` write an audit line first (or nothing at all), owned by the state folder's
owner. The ledger and file permissions are in ``tests/unit/test_spool_audit.py``.
"""

from __future__ import annotations

import os
import pwd
import re
import stat
from pathlib import Path

from tests.support.spool import PATIENT, SECRETS, Spool, dermgate

AUDIT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ user=(?P<user>\S+) action=(?P<action>\S+) "
    r"spool_id=(?P<id>\d+)$"
)


def audit_lines(spool: Spool) -> list[dict[str, str]]:
    """The audit log's lines, parsed (none if there is no log yet)."""
    path = spool.dirs.root.parent / "web" / "audit.log"
    if not path.exists():
        return []
    lines = path.read_text(encoding="ascii").splitlines()
    parsed = [AUDIT_LINE.match(line) for line in lines]
    assert all(parsed), lines
    return [m.groupdict() for m in parsed if m]


def os_user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def test_reveal_and_export_write_an_audit_line_first(spool: Spool, tmp_path: Path) -> None:
    spool_id, _ = spool.add(patient=PATIENT)

    assert dermgate("show", spool_id, config=spool.config).returncode == 0
    assert dermgate("show", spool_id, "--json", config=spool.config).returncode == 0
    assert audit_lines(spool) == [], "no patient data shown, nothing to audit"

    shown = dermgate("show", spool_id, "--reveal", config=spool.config)
    assert shown.returncode == 0, shown.stderr
    assert "Doe^Jane" in shown.stdout
    exported = dermgate("export", spool_id, "--to", tmp_path / "out", config=spool.config)
    assert exported.returncode == 0, exported.stderr

    assert audit_lines(spool) == [
        {"user": os_user(), "action": "cli-reveal", "id": str(spool_id)},
        {"user": os_user(), "action": "cli-export", "id": str(spool_id)},
    ]
    log = (spool.dirs.root.parent / "web" / "audit.log").read_text(encoding="ascii")
    for secret in SECRETS:
        assert secret not in log


def test_no_audit_line_no_patient_data(spool: Spool, tmp_path: Path) -> None:
    spool_id, _ = spool.add(patient=PATIENT)
    (spool.dirs.root.parent / "web" / "audit.log").mkdir(parents=True)  # cannot be appended

    shown = dermgate("show", spool_id, "--reveal", config=spool.config)
    exported = dermgate("export", spool_id, "--to", tmp_path / "out", config=spool.config)
    for result in (shown, exported):
        assert result.returncode == 1
        assert "audit" in result.stderr
        for secret in SECRETS:
            assert secret not in result.stdout
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_audit_log_written_as_root_belongs_to_the_state_dirs_owner(spool: Spool) -> None:
    assert os.geteuid() == 0, "run the tests as root (scripts/test.sh, as CI does)"
    spool_id, _ = spool.add(patient=PATIENT)
    state_dir = spool.dirs.root.parent
    os.chown(state_dir, 4242, 4343)  # the service's user; the admin runs the CLI as root

    assert dermgate("show", spool_id, "--reveal", config=spool.config).returncode == 0
    for path in (state_dir / "web", state_dir / "web" / "audit.log"):
        info = path.stat()
        assert (info.st_uid, info.st_gid) == (4242, 4343), path
    assert stat.S_IMODE((state_dir / "web" / "audit.log").stat().st_mode) == 0o600
