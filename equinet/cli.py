"""The ``equinet`` command line: ``equinet SUBCOMMAND [options]``.

A user mistake on the command line gets one line on stderr and exit code 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import platform
import sys


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``equinet: error: ... (see 'equinet --help')``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _info(args: argparse.Namespace) -> int:
    """Print versions, conventions and the operator backends available here."""
    import e3nn
    import torch

    import equinet
    from equinet.ops import BACKENDS

    print(f"equinet {equinet.__version__}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, e3nn {e3nn.__version__}")
    print(f"cuda available: {torch.cuda.is_available()}")
    print(f"tensor-product backends: {', '.join(BACKENDS)}")
    print("conventions:")
    for key, value in equinet.CONVENTIONS.items():
        print(f"  {key}: {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from equinet import __version__

    parser = _Parser(prog="equinet", description="Equivariant machine-learning interatomic potentials.")
    parser.add_argument("--version", action="version", version=f"equinet {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    info = commands.add_parser("info", help="versions, conventions and available backends")
    info.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
