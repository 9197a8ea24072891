"""The ``dermgate`` command.

::

    dermgate run --config FILE              run the gateway (the service)
    dermgate --version                      print the installed version
    dermgate check --config FILE [--connect] [--json]
                                            the configuration, the box and (with
                                            --connect) every peer; one line per check
                                            (see gateway/cli/check.py)
    dermgate check-config FILE              the same as check without --connect
    dermgate echo --config FILE [--json]    C-ECHO each destination; which of
                                            DermGate's SOP classes it accepts
                                            (see gateway/cli/echo.py)
    dermgate spool list|show|retry|export …  the technician's spool commands
                                            (see gateway/cli/spool.py)
    dermgate demo [--workdir DIR] [--captures N]
    dermgate simulate DRIVER [options]      run a driver's device simulator
    dermgate conformance DRIVER [--check NAME] [--workdir DIR]
                                            run the driver conformance kit against
                                            an installed driver and its simulator
    dermgate user add NAME --config FILE [--password-stdin]
                                            add a login of the local page (or
                                            change its password)
    dermgate user list --config FILE        the logins (names only)
    dermgate user remove NAME --config FILE remove a login
    dermgate token add|list|remove …        API tokens of the integration API
                                            (see gateway/cli/tokens.py)
    dermgate worklist list|refresh --config FILE
                                            the Modality Worklist cache (see
                                            gateway/cli/worklist.py)
    dermgate update stage|apply|rollback|boot-check|status …
                                            signed offline updates (the same as
                                            dermgate-update: gateway/update/cli.py)
    dermgate backup|restore …               a box's state in one tar, back onto a
                                            new SD card (see gateway/cli/backup.py)

Exit codes: 0 success, 1 failure at run time, 2 bad usage or bad configuration;
141 (128 + SIGPIPE) when the reader of the output went away (``… | head``), quietly.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

from gateway.core.config import ConfigError, DermGateConfig
from gateway.core.heap import keep_heap_flat
from gateway.service.config import load_config
from gateway.service.logs import PLAIN_FORMAT, JournalFormatter, logs_to_journal
from gateway.service.state_lock import StateLocked
from gateway.service.stop_deadline import StopDeadline, enable_stack_dumps
from gateway.spool.rebuild import LedgerLost
from gateway.spool.spool_ids import SpoolIdMarkDamaged

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # 141: the reader closed the pipe


def setup_logging(level: str) -> None:
    """Log to stderr, one line per event: to the journal with a priority per line and
    no timestamp of our own under systemd, else with time and level
    (:mod:`gateway.service.logs`)."""
    if logs_to_journal(sys.stderr):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter())
        logging.basicConfig(level=getattr(logging, level), handlers=[handler])
    else:
        logging.basicConfig(level=getattr(logging, level), format=PLAIN_FORMAT, stream=sys.stderr)
    # pynetdicom repeats an ERROR line per failed attempt; our forwarder logs each
    # change of a destination's state once. Its own lines only when debugging.
    quiet = logging.WARNING if level == "DEBUG" else logging.CRITICAL
    logging.getLogger("pynetdicom").setLevel(quiet)


def _load(
    path: Path, *, broken_drivers_fatal: bool = True, service: bool = False
) -> DermGateConfig | None:
    try:
        return load_config(path, broken_drivers_fatal=broken_drivers_fatal, service=service)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return None


async def _serve(config: DermGateConfig) -> None:
    from gateway.service.app import run_gateway

    stop = asyncio.Event()
    deadline = StopDeadline(config.supervision.stop_timeout)

    def request_stop() -> None:
        stop.set()
        deadline.arm()  # a stage that will not finish must not keep the box from stopping

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop)
    await run_gateway(config, stop)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the gateway until SIGTERM or SIGINT."""
    # A driver plugin that fails to load stops only its devices (shown QUARANTINED).
    config = _load(args.config, broken_drivers_fatal=False, service=True)
    if config is None:
        return EXIT_USAGE
    setup_logging(config.gateway.log_level)
    enable_stack_dumps()
    keep_heap_flat()  # a large capture's 1 MiB blocks go back to the system
    try:
        asyncio.run(_serve(config))
    except (StateLocked, LedgerLost, SpoolIdMarkDamaged) as refused:  # nothing changed
        if isinstance(refused, LedgerLost):
            refused.config_file = str(args.config)
        print(f"dermgate run: {refused}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as err:
        from gateway.service.supervise import stop_reason

        logging.getLogger("gateway").critical("gateway stopped on error: %s", stop_reason(err))
        return EXIT_FAILURE
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the embedded default: private Orthanc, the gateway and a simulator."""
    from gateway.demo.run import run_demo

    setup_logging("INFO")
    return run_demo(workdir=args.workdir, captures=args.captures, timeout=args.timeout)


def cmd_simulate(args: argparse.Namespace) -> int:
    """Hand over to the simulator shipped with a driver."""
    from gateway.devices.registry import UnknownDriver, find_driver

    try:
        factory = find_driver(args.driver)
    except UnknownDriver as err:
        print(f"dermgate simulate: {err}", file=sys.stderr)
        return EXIT_USAGE
    target = getattr(factory, "simulator", None)
    if not isinstance(target, str):
        print(f"dermgate simulate: driver {args.driver} has no simulator", file=sys.stderr)
        return EXIT_USAGE
    module_name, _, func_name = target.partition(":")
    func = cast(
        Callable[[list[str]], int], getattr(importlib.import_module(module_name), func_name)
    )
    return func(list(args.args))


def cmd_user_add(args: argparse.Namespace) -> int:
    """Add a login of the local page, or set a new password for an existing one."""
    import getpass

    from gateway.status.web.users import Users, UsersError, WeakPassword, check_name

    config = _load(args.config, broken_drivers_fatal=False)
    if config is None:
        return EXIT_USAGE
    try:
        check_name(args.name)
    except ValueError as err:
        print(f"dermgate user add: {err}", file=sys.stderr)
        return EXIT_USAGE
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            password = getpass.getpass(f"Password for {args.name}: ")
            if getpass.getpass("Repeat it: ") != password:
                print("dermgate user add: the passwords differ; nothing changed", file=sys.stderr)
                return EXIT_USAGE
        except (EOFError, KeyboardInterrupt):
            print("\ndermgate user add: cancelled; nothing changed", file=sys.stderr)
            return EXIT_USAGE
    path = config.users_path()
    try:
        users = Users.load(path)
        existed = args.name in users.users
        users.set_password(args.name, password)
        users.save_for_service(path, config.gateway.state_dir)
    except WeakPassword as err:
        print(f"dermgate user add: password refused: {err}; nothing changed", file=sys.stderr)
        return EXIT_USAGE
    except (UsersError, OSError) as err:
        print(f"dermgate user add: {err}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{'password changed for' if existed else 'added'} user {args.name} in {path}")
    return EXIT_OK


def cmd_user_list(args: argparse.Namespace) -> int:
    """Print the logins of the local page, one name a line (never their hashes)."""
    from gateway.status.web.users import Users, UsersError

    config = _load(args.config, broken_drivers_fatal=False)
    if config is None:
        return EXIT_USAGE
    try:
        users = Users.load(config.users_path())
    except UsersError as err:
        print(f"dermgate user list: {err}", file=sys.stderr)
        return EXIT_FAILURE
    for name in users.names():
        print(name)
    if not users.users:
        print(f"dermgate user list: no users in {config.users_path()}", file=sys.stderr)
    return EXIT_OK


def cmd_user_remove(args: argparse.Namespace) -> int:
    """Remove a login; its sessions on the running page end at once."""
    from gateway.status.web.users import Users, UsersError

    config = _load(args.config, broken_drivers_fatal=False)
    if config is None:
        return EXIT_USAGE
    path = config.users_path()
    try:
        users = Users.load(path)
        if not users.remove(args.name):
            print(f"dermgate user remove: no user {args.name} in {path}; nothing changed",
                  file=sys.stderr)  # fmt: skip
            return EXIT_FAILURE
        users.save_for_service(path, config.gateway.state_dir)
    except (UsersError, OSError) as err:
        print(f"dermgate user remove: {err}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"removed user {args.name} from {path}")
    return EXIT_OK


class _Version(argparse.Action):
    """``--version``: the installed version (read only when asked: it loads the app)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object, **__: object) -> None:
        from gateway.service.app import software_version

        print(f"dermgate {software_version()}")
        parser.exit()


def build_parser(only_run: bool = False) -> argparse.ArgumentParser:
    """The argument parser of ``dermgate``; with ``only_run``, only its ``run``
    subcommand (``dermgate run`` then imports none of the other commands' modules:
    start-up time and idle memory)."""
    parser = argparse.ArgumentParser(
        prog="dermgate", description="DermGate: dermatology imaging devices to the PACS."
    )
    parser.add_argument(
        "--version", action=_Version, nargs=0, help="print the installed version and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the gateway service")
    run.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")
    run.set_defaults(func=cmd_run)
    if only_run:
        return parser

    from gateway.cli.backup import add_backup_commands
    from gateway.cli.check import add_check_commands
    from gateway.cli.echo import add_echo_command
    from gateway.cli.spool import add_spool_commands
    from gateway.cli.tokens import add_token_commands
    from gateway.cli.worklist import add_worklist_commands

    add_check_commands(sub)  # check [--connect] [--json], check-config: gateway/cli/check.py

    add_echo_command(sub)  # which SOP classes each destination takes: gateway/cli/echo.py
    add_spool_commands(sub)  # list, show, retry, export: gateway/cli/spool.py

    demo = sub.add_parser("demo", help="run a self-contained demo with simulated devices")
    demo.add_argument(
        "--workdir",
        type=Path,
        default=Path("dermgate-demo"),
        help="where the demo keeps its state (default: ./dermgate-demo)",
    )
    demo.add_argument(
        "--captures",
        type=int,
        default=None,
        help="exit 0 once N captures are in the PACS (default: run until Ctrl-C)",
    )
    demo.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="with --captures: give up (exit 1) after this many seconds",
    )
    demo.set_defaults(func=cmd_demo)

    simulate = sub.add_parser("simulate", help="run a device simulator (see DRIVER --help)")
    simulate.add_argument("driver", help="driver id, e.g. serial-dermatoscope")
    simulate.add_argument("args", nargs=argparse.REMAINDER, help="options of the simulator")
    simulate.set_defaults(func=cmd_simulate)

    # conformance DRIVER [--check NAME] [--workdir DIR]: the driver conformance kit
    # (gateway/conformance/command.py; exit 0 pass, 1 failing checks, 2 no such driver).
    from gateway.conformance.command import add_conformance_command

    add_conformance_command(sub)

    user = sub.add_parser("user", help="logins of the local page")
    user_actions = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = user_actions.add_parser(
        "add", help="add a login (or set a new password); asks for the password"
    )
    add.add_argument("name", help="user name (letters, digits, '.', '_', '-')")
    add.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin",
    )
    add.set_defaults(func=cmd_user_add)
    listing = user_actions.add_parser("list", help="the logins (names only)")
    listing.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")
    listing.set_defaults(func=cmd_user_list)
    remove = user_actions.add_parser("remove", help="remove a login (its sessions end at once)")
    remove.add_argument("name", help="user name")
    remove.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")
    remove.set_defaults(func=cmd_user_remove)

    add_token_commands(sub)  # add, list, remove: gateway/cli/tokens.py
    add_worklist_commands(sub)  # list, refresh: gateway/cli/worklist.py

    update = sub.add_parser("update", help="signed offline updates (same as dermgate-update)")
    update.add_argument("args", nargs=argparse.REMAINDER, help="stage, apply, rollback, status")
    update.set_defaults(func=cmd_update)
    add_backup_commands(sub)  # backup, restore: gateway/cli/backup.py
    return parser


def cmd_update(args: argparse.Namespace) -> int:
    """``dermgate update …``: the updater of gateway/update (on a box, run the
    ``dermgate-update`` zipapp instead: it works when this release's venv does not)."""
    from gateway.update.cli import run as run_update

    return run_update(cast(list[str], args.args))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dermgate`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["update"]:  # its options go to the updater's own parser, untouched
        return cmd_update(argparse.Namespace(args=argv[1:]))
    parser = build_parser(only_run=argv[:1] == ["run"])
    args = parser.parse_args(argv)
    func = cast(Callable[[argparse.Namespace], int], args.func)
    try:
        code = func(args)
        sys.stdout.flush()  # here, not at interpreter exit, where a closed pipe is a traceback
    except BrokenPipeError:
        # Whoever read our output stopped (`dermgate spool list | head -1`): end quietly
        # with the status of a process killed by SIGPIPE, as coreutils' commands do.
        # Python's own advice: point stdout at /dev/null so the final flush is silent.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return code


if __name__ == "__main__":
    raise SystemExit(main())
