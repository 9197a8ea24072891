"""The ``dermgate token`` commands: API tokens of the integration API.

::

    dermgate token add NAME --config FILE [--replace]
                                   make a token; print it once on stdout (only the
                                   token, so ``TOKEN=$(dermgate token add …)`` works)
    dermgate token list --config FILE
                                   the token names and when each was made
    dermgate token remove NAME --config FILE
                                   remove a token (the running service refuses it at
                                   once, no restart)

The file keeps a SHA-256 of each token, never the token (see
:mod:`gateway.status.web.tokens`). Exit codes: 0 success; 1 refused at run time
(the name exists without ``--replace``, no such token, an unreadable file);
2 bad usage or bad configuration.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.core.config import ConfigError, DermGateConfig
from gateway.service.config import load_config
from gateway.status.web.tokens import TokenExists, Tokens, TokensError, check_token_name

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _load(path: Path) -> DermGateConfig | None:
    try:
        return load_config(path, broken_drivers_fatal=False)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return None


def cmd_token_add(args: argparse.Namespace) -> int:
    """Make a token for NAME and print it once."""
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    try:
        check_token_name(args.name)
    except ValueError as err:
        print(f"dermgate token add: {err}", file=sys.stderr)
        return EXIT_USAGE
    path = config.tokens_path()
    try:
        tokens = Tokens.load(path)
        existed = args.name in tokens.tokens
        token = tokens.add(args.name, replace=args.replace)
        tokens.save_for_service(path, config.gateway.state_dir)
    except TokenExists:
        print(
            f"dermgate token add: a token named {args.name} exists already; nothing changed "
            "(--replace makes a new one and ends the old one)",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except (TokensError, OSError) as err:
        print(f"dermgate token add: {err}", file=sys.stderr)
        return EXIT_FAILURE
    print(token)
    what = "replaced" if existed else "added"
    print(
        f"{what} API token {args.name} in {path}; it is shown only this once: "
        "send it as 'Authorization: Bearer TOKEN'",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_token_list(args: argparse.Namespace) -> int:
    """Print the token names and their creation dates (never a hash)."""
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    try:
        tokens = Tokens.load(config.tokens_path())
    except TokensError as err:
        print(f"dermgate token list: {err}", file=sys.stderr)
        return EXIT_FAILURE
    for name in tokens.names():
        print(f"{name}\t{tokens.created(name)}")
    if not tokens.tokens:
        print(f"dermgate token list: no API tokens in {config.tokens_path()}", file=sys.stderr)
    return EXIT_OK


def cmd_token_remove(args: argparse.Namespace) -> int:
    """Remove NAME's token; the running service refuses it from now on."""
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    path = config.tokens_path()
    try:
        tokens = Tokens.load(path)
        if not tokens.remove(args.name):
            print(f"dermgate token remove: no token {args.name} in {path}; nothing changed",
                  file=sys.stderr)  # fmt: skip
            return EXIT_FAILURE
        tokens.save_for_service(path, config.gateway.state_dir)
    except (TokensError, OSError) as err:
        print(f"dermgate token remove: {err}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"removed API token {args.name} from {path}")
    return EXIT_OK


def add_token_commands(sub: Any) -> None:
    """Add ``token`` and its actions to the ``dermgate`` subparsers ``sub``."""
    token = sub.add_parser("token", help="API tokens of the integration API")
    actions = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="make a token and print it once")
    add.add_argument("name", help="token name (1-32 letters, digits, '_', '-')")
    add.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")
    add.add_argument("--replace", action="store_true", help="replace the token of an existing name")
    add.set_defaults(func=cmd_token_add)
    listing = actions.add_parser("list", help="the token names and creation dates")
    listing.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")
    listing.set_defaults(func=cmd_token_list)
    remove = actions.add_parser("remove", help="remove a token (refused at once, no restart)")
    remove.add_argument("name", help="token name")
    remove.add_argument("--config", type=Path, required=True, help="configuration file (TOML)")
    remove.set_defaults(func=cmd_token_remove)
