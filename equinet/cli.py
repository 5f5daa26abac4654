"""The ``equinet`` command line: ``equinet SUBCOMMAND [options]``.

A user mistake (command line, config, data or model file) gets one line on stderr and
exit code 2, never a traceback; set ``EQUINET_DEBUG=1`` to see the traceback anyway.
"""

from __future__ import annotations

import argparse
import os
import sys

from equinet.commands import data, evaluate, export, info, lammps, md, train
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
    for command in (info, data, train, evaluate, md, export, lammps):
        command.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, LammpsError) as error:  # DataError, ConfigError, bad model files and values
        if os.environ.get("EQUINET_DEBUG"):
            raise
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"equinet: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
