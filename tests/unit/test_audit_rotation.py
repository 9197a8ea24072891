"""The reveal audit log is rotated by size and keeps ``audit_keep`` files; every line
still lands (or the write fails: no line, no data), also with several writers."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from gateway.core.config import DermGateConfig
from gateway.status.web.audit import MIB, AuditLog


def _lines(log: AuditLog) -> list[str]:
    """Every line of the current and rotated files, oldest first."""
    files = [log.rotated(n) for n in range(log.keep, 0, -1)] + [log.path]
    return [line for f in files if f.exists() for line in f.read_text("ascii").splitlines()]


def test_rotates_at_the_size_and_keeps_n_files(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "web" / "audit.log", max_bytes=400, keep=3)
    written = [log.append("tech", "reveal", n) for n in range(60)]
    assert log.path.stat().st_size <= 400
    for n in (1, 2, 3):
        assert log.rotated(n).exists()
        assert log.rotated(n).stat().st_size <= 400
        assert stat.S_IMODE(log.rotated(n).stat().st_mode) == 0o600
    assert not log.rotated(4).exists()  # the oldest beyond keep is gone
    kept = _lines(log)
    assert kept == [line.rstrip("\n") for line in written[-len(kept) :]]  # newest, in order
    assert len(kept) > 3 * 400 // len(written[0])  # three full files and the current one


def test_never_rotated_with_audit_max_mb_0(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", max_bytes=0)
    for n in range(200):
        log.append("tech", "reveal", n)
    assert not log.rotated(1).exists()
    assert len(_lines(log)) == 200


def test_two_writers_rotating_lose_no_line(tmp_path: Path) -> None:
    """The service and a ``dermgate spool`` command write the same file: every line
    lands in exactly one file, whoever rotates."""
    path = tmp_path / "audit.log"
    writers = [AuditLog(path, max_bytes=2000, keep=1000) for _ in range(4)]

    def write(index: int) -> None:
        for n in range(150):
            writers[index].append(f"user{index}", "reveal", n)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = _lines(writers[0])
    assert len(lines) == 600
    for index in range(4):
        assert [line.split()[-1] for line in lines if f"user={f'user{index}'} " in line] == [
            f"spool_id={n}" for n in range(150)
        ]


def test_a_rotation_that_fails_writes_no_line(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", max_bytes=60, keep=2)
    log.append("tech", "reveal", 1)
    log.append("tech", "reveal", 2)  # past 60 bytes: audit.log.1 holds line 1
    assert log.rotated(1).read_text("ascii").endswith("spool_id=1\n")
    (log.rotated(2) / "blocked").mkdir(parents=True)  # .1 cannot become .2
    with pytest.raises(IsADirectoryError):
        log.append("tech", "reveal", 3)
    files = [log.path, log.rotated(1)]
    assert not any("spool_id=3" in f.read_text("ascii") for f in files if f.exists())


def test_from_config_takes_web_audit_max_mb_and_audit_keep(tmp_path: Path) -> None:
    config = DermGateConfig.model_validate(
        {
            "gateway": {"id": "box", "ae_title": "DERMGATE", "state_dir": str(tmp_path)},
            "web": {"audit_max_mb": 0.5, "audit_keep": 4},
        }
    )
    log = AuditLog.from_config(config)
    assert (log.path, log.max_bytes, log.keep) == (tmp_path / "web" / "audit.log", MIB // 2, 4)
    default = AuditLog.from_config(
        DermGateConfig.model_validate(
            {"gateway": {"id": "box", "ae_title": "DERMGATE", "state_dir": str(tmp_path)}}
        )
    )
    assert (default.max_bytes, default.keep) == (10 * MIB, 10)
