"""The ``unimix`` command: one sub-command per module of :mod:`unimix.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``;
its top level imports only the core dependencies (torch, numpy), so ``unimix --help`` works on a
core-only install. Only the command being run gets its arguments (and their imports).

Errors: an expected error (:class:`unimix.errors.UsageError`, a missing extra, the ValueError,
TypeError, OSError, CheckpointError and YAML errors of bad inputs, and a write refused by a file
size limit, a full disk or a quota) is printed as one line
``unimix CMD: error: MESSAGE`` on stderr with exit status 2; ``unimix --debug CMD …`` lets the
traceback through instead. Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable, Sequence
from types import ModuleType

from unimix.errors import UsageError, missing_extra, one_line, storage_message

COMMANDS = ("study", "train", "evaluate", "profile", "gallery", "predict")

#: The extra each command needs (named in the error when a dependency is missing).
COMMAND_EXTRAS = {
    "study": "study",
    "train": "study",
    "evaluate": "study",
    "profile": "theory",
    "gallery": "study",
    "predict": "theory",
}

_GLOBAL_FLAGS = {"--debug", "--version", "-h", "--help"}


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"unimix.commands.{name}")


def _command_in(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (the first word that is not a global flag)."""
    for token in argv:
        if token in _GLOBAL_FLAGS:
            continue
        return token if token in COMMANDS else None
    return None


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``PROG: error: MESSAGE (see PROG --help)``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser(full: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The ``unimix`` parser; commands in ``full`` (all when ``None``) get their arguments.

    A command whose module cannot be imported for a missing extra is listed with a note.
    """
    from unimix import __version__

    full = set(COMMANDS if full is None else full)
    parser = _Parser(
        prog="unimix",
        description="Mixed sample data augmentation as random mixing masks: mix, analyse, study.",
    )
    parser.add_argument("--version", action="version", version=f"unimix {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = _module(name)
        except ModuleNotFoundError as err:
            if err.name == f"unimix.commands.{name}":
                continue
            missing = missing_extra(err, COMMAND_EXTRAS.get(name))
            if missing is None:
                raise
            sub.add_parser(name, help=f"(needs the '{missing.extra}' extra)")
            continue
        cmd = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            epilog=getattr(module, "EPILOG", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        parser.set_defaults(**{f"_parser_{name}": cmd})
        if name in full:
            module.add_arguments(cmd)
            cmd.set_defaults(_run=module.run)
    return parser


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input, not a bug."""
    kinds: list[type[BaseException]] = [UsageError, ValueError, TypeError, OSError]
    yaml = sys.modules.get("yaml")
    if yaml is not None:
        kinds.append(yaml.YAMLError)
    return tuple(kinds)


def error_message(err: BaseException, command: str | None) -> str | None:
    """The one-line message of an expected error, or ``None`` for a bug (let it through).

    A write refused for room (file size limit, full disk, quota) is expected whatever error a
    library wraps it in: one line naming the file and the fix (:func:`unimix.errors.storage_message`).
    """
    storage = storage_message(err)
    if storage is not None:
        return one_line(storage)
    if isinstance(err, ImportError):
        missing = missing_extra(err, COMMAND_EXTRAS.get(command or ""))
        if missing is not None:
            return str(missing)
        if "pip install" in str(err):  # an ImportError that already says what to install
            return one_line(err)
        return None
    if isinstance(err, _expected_errors()):
        if isinstance(err, OSError) and err.filename is not None and err.strerror:
            return one_line(f"{err.filename}: {err.strerror}")
        return one_line(err)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``unimix`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_in(argv)
    debug = "--debug" in argv
    prog = f"unimix {command}" if command else "unimix"
    try:
        parser = build_parser([command] if command else [])
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # reported by the command's parser, so the message names the command
            owner = getattr(args, f"_parser_{command}", parser) if command else parser
            owner.error(f"unrecognized arguments: {' '.join(unknown)}")
        if getattr(args, "_run", None) is None:
            parser.print_help()
            return 2
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        message = error_message(err, command)
        if message is None or debug:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
