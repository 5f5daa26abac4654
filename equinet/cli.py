"""The ``equinet`` command line: ``equinet SUBCOMMAND [options]``.

A user mistake (command line, config or data) gets one line on stderr and exit code 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from equinet.commands import data, info


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
    for command in (info, data):
        command.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    from equinet.datasets import DataError

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except DataError as error:
        print(f"equinet: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
