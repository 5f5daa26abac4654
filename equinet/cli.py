"""The ``equinet`` command line: ``equinet SUBCOMMAND [options]``.

A user mistake (command line, config, data, model file, path or device) gets one line on
stderr and exit code 2, never a traceback; set ``EQUINET_DEBUG=1`` to see the traceback
anyway. Any other exception is a bug in equinet: its traceback is printed, with a line
asking for a report, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from equinet.commands import data, elastic, evaluate, export, imports, info, lammps, md, phonons, select, spectrum, train
from equinet.lammps import LammpsError


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``equinet: error: ... (see 'equinet --help')``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from equinet import __version__

    parser = _Parser(prog="equinet", description="Equivariant machine-learning interatomic potentials.")
    parser.add_argument("--version", action="version", version=f"equinet {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    for command in (info, data, train, evaluate, md, spectrum, select, phonons, elastic, export, imports, lammps):
        command.register(commands)
    return parser


# Every expected mistake: ConfigError, DataError, UsageError and bad values are ValueErrors;
# OSError covers the file system (missing, unreadable or unwritable paths, a full disk).
USER_ERRORS = (ValueError, OSError, LammpsError)


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except USER_ERRORS as error:
        if os.environ.get("EQUINET_DEBUG"):
            raise
        print(f"equinet: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("equinet: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print("equinet: internal error: this is a bug in equinet, not in your input; please report it with the traceback above", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
