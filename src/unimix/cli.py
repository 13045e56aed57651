"""The ``unimix`` command: one sub-command per module of :mod:`unimix.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS = ("study", "train", "evaluate", "profile", "gallery")


def build_parser() -> argparse.ArgumentParser:
    from unimix import __version__

    parser = argparse.ArgumentParser(
        prog="unimix",
        description="Mixed sample data augmentation as random mixing masks: mix, analyse, study.",
    )
    parser.add_argument("--version", action="version", version=f"unimix {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"unimix.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"unimix.commands.{name}":
                continue
            raise
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
