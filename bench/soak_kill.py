"""Soak: hundreds of random SIGKILLs of ``dermgate run`` while a dermatoscope keeps offering.

The long version of the fault suite (tests/e2e/test_crash_suite.py kills 25 times).
``dermgate simulate serial-dermatoscope`` offers ``--captures`` images on a pty, one
every ``--interval`` seconds, re-offering whatever it was not ACKed for. Meanwhile
``dermgate run`` (one serial dermatoscope, one destination: a private Orthanc with
Storage Commitment, our listener registered in its DicomModalities,
``commitment_timeout`` 3 s) is SIGKILLed at a uniformly random moment 0.2–2.5 s after
it was started, and started again at once, ``--kills`` times. Then one last gateway
runs until the simulator has every capture ACKed and the ledger says every one is
COMMITTED (bounded wait), and is stopped with SIGTERM.

Figures: kills, acknowledged (the simulator's report), delivered (acknowledged
captures found in Orthanc by the SOP Instance UID the ledger gave them), duplicates
(Orthanc instances beyond the acknowledged captures found; ledger rows per (device
serial, capture id) beyond one), lost (acknowledged but not in Orthanc, or not
COMMITTED), wall time. Anchor ratio: delivered/acknowledged (target 1.000) and
duplicates (target 0). Exit status 0 when nothing is lost or duplicated, else 1.

Run: ``.venv/bin/python bench/soak_kill.py [--kills 500] [--captures 60] [--seed S]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

from common import DERMGATE, DRIVER, bench_dir, gateway_config, print_header, stop_process

from gateway.demo.local_orthanc import ORTHANC_BINARY, OrthancProcess, free_port

GATEWAY_AE = "DERMGATE"
SERIAL = "DS100-SOAK"
DESTINATION = "pacs"
# Mean life of one gateway in the kill phase (uniform 0.2–2.5 s) plus the kill and
# the restart; used only to spread the simulator's captures over the kill phase.
_SECONDS_PER_KILL = 1.45


def _interrupt_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so that the clean-up below always runs."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@dataclass
class KillPhase:
    """What the kill phase saw."""

    kills: int = 0
    running_at_kill: int = 0
    startup_seconds: list[float] = field(default_factory=list)
    states_at_kill: Counter[str] = field(default_factory=Counter)
    acked_during: int = 0
    seconds: float = 0.0


class Gateway:
    """``dermgate run`` restarted again and again, all output appended to one log."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None
        self._offset = 0

    def start(self) -> None:
        """Start one gateway; remember where its log starts."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _close()
        self._offset = self._log.tell()
        self.proc = subprocess.Popen(
            [str(DERMGATE), "run", "--config", str(self.config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def new_log(self) -> str:
        """What this gateway logged so far."""
        with open(self.log_path, "rb") as log:
            log.seek(self._offset)
            return log.read().decode("utf-8", "replace")

    def running(self) -> bool:
        """Has this gateway logged that it is running?"""
        return " running as " in self.new_log()

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
        self._close()

    def stop(self) -> int | None:
        """SIGTERM (SIGKILL after 30 s); the exit code."""
        code = None
        if self.proc is not None:
            stop_process(self.proc)
            code = self.proc.returncode
        self._close()
        return code

    def _close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def ledger_rows(ledger: Path) -> list[sqlite3.Row]:
    """Every capture row (read-only); empty while there is no ledger yet."""
    if not ledger.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return []
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM captures ORDER BY id").fetchall()
    except sqlite3.Error:
        return []
    finally:
        conn.close()


def read_report(path: Path) -> list[dict[str, str]]:
    """The simulator's acknowledged captures (empty until it wrote its report)."""
    with contextlib.suppress(OSError, ValueError):
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return list(data.get("acknowledged", []))
    return []


@contextlib.contextmanager
def simulator(
    link: Path,
    report: Path,
    log_path: Path,
    args: argparse.Namespace,
    interval: float,
    limit: float,
) -> Iterator[subprocess.Popen[bytes]]:
    """``dermgate simulate serial-dermatoscope`` on a pty linked at ``link``."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                str(DERMGATE),
                "simulate",
                DRIVER,
                "--link",
                str(link),
                "--report",
                str(report),
                "--captures",
                str(args.captures),
                "--interval",
                f"{interval:.3f}",
                "--retry-delay",
                "0.3",
                "--ack-timeout",
                "5",
                "--timeout",
                f"{limit:.0f}",
                "--seed",
                str(args.seed),
                "--serial",
                SERIAL,
                "--width",
                str(args.width),
                "--height",
                str(args.height),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while not link.is_symlink():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"simulator did not create {link}; see {log_path}")
                time.sleep(0.05)
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def kill_phase(
    gateway: Gateway, ledger: Path, report: Path, rng: random.Random, args: argparse.Namespace
) -> KillPhase:
    """Start, wait a random moment, SIGKILL; ``args.kills`` times."""
    phase = KillPhase()
    started = time.perf_counter()
    for number in range(args.kills):
        life = rng.uniform(args.min_life, args.max_life)
        gateway.start()
        born = time.perf_counter()
        seen_running: float | None = None
        while (now := time.perf_counter()) - born < life:
            if seen_running is None and gateway.running():
                seen_running = now - born
            time.sleep(min(0.05, max(0.0, life - (now - born))))
        gateway.kill()
        phase.kills += 1
        if seen_running is not None or gateway.running():
            phase.running_at_kill += 1
            if seen_running is not None:
                phase.startup_seconds.append(seen_running)
        phase.states_at_kill.update({str(r["state"]) for r in ledger_rows(ledger)})
        if (number + 1) % 50 == 0:
            print(
                f"  {number + 1} kills, {time.perf_counter() - started:.0f} s, "
                f"{len(read_report(report))} acknowledged so far",
                flush=True,
            )
    phase.seconds = time.perf_counter() - started
    phase.acked_during = len(read_report(report))
    return phase


_RECONCILED = re.compile(
    r"spool reconciled after an unclean stop: (\d+) staging file\(s\) removed, (\d+) "
    r"temporary file\(s\) removed, (\d+) unrecorded file\(s\) moved to orphans/, (\d+) "
    r"capture\(s\) to wrap again, (\d+) quarantined"
)


def recovery_counts(log_path: Path) -> dict[str, int]:
    """What the gateways' logs say they repaired or repeated across all the restarts."""
    text = log_path.read_text(encoding="utf-8", errors="replace")
    counts = {
        "reoffered": text.count("recognised (spool id"),
        "cstores": len(re.findall(r"spool id \d+ delivered to ", text)),
        "reasked": text.count("unanswered after"),
        "reconciled": 0,
    }
    keys = ("staging", "temp", "orphans", "rewrap", "quarantined")
    for key in keys:
        counts[key] = 0
    for match in _RECONCILED.finditer(text):
        counts["reconciled"] += 1
        for key, value in zip(keys, match.groups(), strict=True):
            counts[key] += int(value)
    return counts


def wait_until(predicate: Any, timeout: float, poll: float = 0.25) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak; print the figures; 0 when nothing was lost or duplicated."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=500, help="SIGKILLs (default 500)")
    parser.add_argument("--captures", type=int, default=60, help="captures (default 60)")
    parser.add_argument("--seed", type=int, help="random seed (default: drawn and printed)")
    parser.add_argument(
        "--interval",
        type=float,
        help="seconds between captures (default: spread over ~80%% of the kill phase)",
    )
    parser.add_argument("--width", type=int, default=1024, help="image width (default 1024)")
    parser.add_argument("--height", type=int, default=768, help="image height (default 768)")
    parser.add_argument("--min-life", type=float, default=0.2, help="seconds (default 0.2)")
    parser.add_argument("--max-life", type=float, default=2.5, help="seconds (default 2.5)")
    parser.add_argument("--commitment-timeout", type=float, default=3.0, help="seconds (default 3)")
    parser.add_argument(
        "--final-timeout",
        type=float,
        default=600.0,
        help="seconds the last gateway gets to have everything ACKed and COMMITTED",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if args.kills < 1 or args.captures < 1 or not 0 < args.min_life <= args.max_life:
        parser.error("need --kills >= 1, --captures >= 1, 0 < --min-life <= --max-life")
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    if not ORTHANC_BINARY.exists() or not DERMGATE.exists():
        sys.exit(f"need {ORTHANC_BINARY} and {DERMGATE} (scripts/setup.sh)")
    _interrupt_on_sigterm()
    rng = random.Random(args.seed)
    mean_life = (args.min_life + args.max_life) / 2 + (_SECONDS_PER_KILL - 1.35)
    interval = (
        args.interval
        if args.interval is not None
        else max(0.2, 0.8 * args.kills * mean_life / args.captures)
    )
    # The simulator gives up (exit 1) after this; well past the kill phase + final wait.
    sim_limit = 2 * args.kills * mean_life + args.captures * interval + args.final_timeout + 300

    wall_start = time.perf_counter()
    with bench_dir("dermgate-bench-soak-", keep=args.keep) as work, contextlib.ExitStack() as stack:
        listen_port = free_port()
        orthanc = OrthancProcess(
            work / "orthanc", modalities={"dermgate": (GATEWAY_AE, "127.0.0.1", listen_port)}
        )
        orthanc.start()
        stack.callback(orthanc.stop)
        state_dir = work / "state"
        ledger = state_dir / "ledger.sqlite3"
        link = work / "ttyDERM0"
        report = work / "report.json"
        config = work / "dermgate.toml"
        config.write_text(
            gateway_config(
                state_dir,
                listen_port=listen_port,
                destination={
                    "name": DESTINATION,
                    "kind": "dicom",
                    "ae_title": orthanc.aet,
                    "host": "127.0.0.1",
                    "port": orthanc.dicom_port,
                    "storage_commitment": True,
                    "commitment_timeout": args.commitment_timeout,
                    "commitment_batch_delay": 0.2,
                    "retry_initial": 0.5,
                    "retry_max": 2.0,
                    "connect_timeout": 3,
                    "acse_timeout": 5,
                    "dimse_timeout": 10,
                    "network_timeout": 10,
                },
                device={
                    "driver": DRIVER,
                    "name": "scope",
                    "port": str(link),
                    "stall_timeout": 5,
                    "reconnect_max": 1,
                },
            ),
            encoding="utf-8",
        )
        print_header(
            "soak: random SIGKILLs of dermgate run while a dermatoscope offers",
            [
                f"seed: {args.seed}; kills: {args.kills} at U({args.min_life}, "
                f"{args.max_life}) s after each start; captures: {args.captures} of "
                f"{args.width}x{args.height} every {interval:.1f} s (simulator over a pty)",
                f"PACS: private Orthanc, storage commitment on, commitment_timeout "
                f"{args.commitment_timeout:g} s",
            ],
        )
        sim = stack.enter_context(
            simulator(link, report, work / "simulator.log", args, interval, sim_limit)
        )
        gateway = Gateway(config, work / "gateway.log")
        stack.callback(gateway.kill)

        phase = kill_phase(gateway, ledger, report, rng, args)

        final_start = time.perf_counter()
        gateway.start()
        # Let the last gateway finish its start-up (reconciliation included) before
        # anything is judged, and so that SIGTERM at the end meets its handlers.
        wait_until(gateway.running, min(120.0, args.final_timeout), poll=0.05)
        sim_code: int | None = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            sim_code = sim.wait(args.final_timeout)
        acknowledged = read_report(report)
        acked_ids = {a["capture_id"] for a in acknowledged}

        def all_committed() -> bool:
            rows = {r["device_capture_id"]: r["state"] for r in ledger_rows(ledger)}
            return all(rows.get(cid) == "COMMITTED" for cid in acked_ids)

        remaining = max(1.0, args.final_timeout - (time.perf_counter() - final_start))
        committed_in_time = wait_until(all_committed, remaining)
        final_seconds = time.perf_counter() - final_start
        exit_code = gateway.stop()
        wall = time.perf_counter() - wall_start

        rows = ledger_rows(ledger)
        per_key = Counter((str(r["device_serial"]), str(r["device_capture_id"])) for r in rows)
        ledger_dups = sum(n - 1 for n in per_key.values() if n > 1)
        by_capture = {str(r["device_capture_id"]): r for r in rows if r["device_serial"] == SERIAL}
        delivered = 0
        multi_stored = 0
        lost: list[str] = []
        wrong_sha = 0
        final_states = Counter(str(r["state"]) for r in rows)
        for acked in acknowledged:
            row = by_capture.get(acked["capture_id"])
            if row is None:
                lost.append(f"{acked['capture_id']} (no ledger row)")
                continue
            if row["raw_sha256"] != acked["sha256"]:
                wrong_sha += 1
            found = len(orthanc.find_instances(str(row["sop_instance_uid"])))
            if found >= 1:
                delivered += 1
                multi_stored += found - 1
            if found == 0 or row["state"] != "COMMITTED":
                lost.append(f"{acked['capture_id']} ({row['state']}, {found} in Orthanc)")
        stored = orthanc.count_instances()
        orthanc_dups = stored - delivered
        duplicates = orthanc_dups + ledger_dups
        unacked_rows = sum(1 for cid in by_capture if cid not in acked_ids)

        recovery = recovery_counts(work / "gateway.log")
        orphans = [p for p in (state_dir / "spool" / "orphans").glob("*") if p.is_file()]
        offers = (work / "simulator.log").read_text(encoding="utf-8", errors="replace")
        offers_made = offers.count(" offering ")

        startup = sorted(phase.startup_seconds)
        median_startup = startup[len(startup) // 2] if startup else float("nan")
        print()
        print(
            f"kill phase:        {phase.kills} kills in {phase.seconds:.0f} s; "
            f"{phase.running_at_kill} after the gateway logged 'running as' "
            f"(median start-up {median_startup:.2f} s), "
            f"{phase.kills - phase.running_at_kill} before"
        )
        print(f"ledger states seen at kill time: {', '.join(sorted(phase.states_at_kill))}")
        print(
            f"acknowledged during the kill phase: {phase.acked_during}/{args.captures}; "
            f"final gateway: {final_seconds:.1f} s to all ACKed and COMMITTED "
            f"(simulator exit {sim_code}, everything COMMITTED in time: "
            f"{'yes' if committed_in_time else 'NO'}, gateway exit on SIGTERM {exit_code})"
        )
        print(f"ledger at the end: {dict(sorted(final_states.items()))}")
        print(
            f"recovery work:     {offers_made} offers for {args.captures} captures; "
            f"{recovery['reoffered']} re-offered captures recognised and ACKed again; "
            f"{recovery['cstores']} successful C-STOREs for {len(rows)} captures; "
            f"{recovery['reasked']} commitment re-asks after timeout"
        )
        print(
            f"reconciliations:   {recovery['reconciled']} unclean start-ups repaired: "
            f"{recovery['staging']} staging and {recovery['temp']} temporary file(s) removed, "
            f"{recovery['orphans']} file(s) moved to orphans/, {recovery['rewrap']} re-wrapped, "
            f"{recovery['quarantined']} quarantined; orphans/ holds {len(orphans)} file(s), "
            f"{sum(p.stat().st_size for p in orphans) / 1e6:.1f} MB"
        )
        print()
        print(f"kills:           {phase.kills}")
        print(f"acknowledged:    {len(acknowledged)} (simulator report; {args.captures} offered)")
        print(f"delivered:       {delivered} (acknowledged, found in Orthanc by SOP Instance UID)")
        print(
            f"duplicates:      {duplicates} (Orthanc holds {stored} instance(s) for "
            f"{delivered} capture(s): {orthanc_dups}; ledger rows beyond one per "
            f"(serial, capture id): {ledger_dups}; same UID stored twice: {multi_stored})"
        )
        print(f"lost:            {len(lost)}" + (f"  {', '.join(lost[:10])}" if lost else ""))
        if wrong_sha or unacked_rows:
            print(
                f"also:            {wrong_sha} ledger SHA-256 mismatches, "
                f"{unacked_rows} ledger rows never acknowledged"
            )
        print(f"wall time:       {wall:.0f} s")
        anchor = delivered / len(acknowledged) if acknowledged else 0.0
        print(f"ratio delivered/acknowledged: {anchor:.3f}  (target 1.000)")
        print(f"duplicates:                   {duplicates}  (target 0)")
        sys.stdout.flush()
        ok = not lost and duplicates == 0 and len(acknowledged) == args.captures
        return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
