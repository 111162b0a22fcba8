"""The `stockade` command. Each subcommand lives in its own module under `stockade.cli.commands`
and registers itself with ``register(subparsers)``; this module only finds and dispatches them."""

from __future__ import annotations

import os

# Before anything imports grpc: the agent forks helpers (nft, iptables-restore, ipset) from a
# process with gRPC loaded, and gRPC's fork handlers break such children.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Callable, Sequence

import stockade.cli.commands as commands_pkg
from stockade.cli import exits
from stockade.codec.version import release

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stockade",
        description="Stockade enforces Kubernetes NetworkPolicy: a brain compiles policies into "
        "per-node rules, node agents enforce them with nftables or iptables.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument(
        "--version", action="version", version=f"stockade {release()}", help="the CLI's version and exit"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands_pkg.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)  # bad usage: the help is the error message
        sys.exit(exits.USAGE)
    try:
        code = handler(args)
    except exits.CliError as e:  # a command's failure with its code (stockade.cli.exits), no traceback
        print(f"stockade: {e}", file=sys.stderr)
        code = e.code
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error of ours.
        sys.stderr.close()
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    main()
