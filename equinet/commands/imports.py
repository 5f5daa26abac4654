"""``equinet import mace FILE.model -o model.pt``: another package's model file as an ordinary
equinet ``model.pt``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands) -> None:
    parser = commands.add_parser("import", help="turn another package's model file into an equinet model.pt")
    sources = parser.add_subparsers(dest="source", metavar="SOURCE", parser_class=type(parser))
    sources.required = True
    mace = sources.add_parser("mace", help="a mace-torch .model file (read without mace-torch; nothing in it is run)")
    mace.add_argument("model", type=Path, help="the .model file (e.g. a MACE-MP-0 or MACE-OFF foundation model)")
    mace.add_argument("-o", "--output", type=Path, required=True, help="the equinet model file to write, e.g. model.pt")
    mace.add_argument("--head", default=None, help="the head to import, for a multi-head model")
    mace.add_argument("--dtype", choices=("float32", "float64"), default=None, help="precision of the model (default: the file's)")
    mace.set_defaults(run=run_mace)


def run_mace(args: argparse.Namespace) -> int:
    from ase.data import chemical_symbols

    from equinet.files import output_file
    from equinet.foreign.mace import import_mace
    from equinet.model_io import save_model

    output_file(args.output, "--output", inputs=[args.model])
    model = import_mace(args.model, head=args.head, dtype=args.dtype)
    save_model(model, args.output)
    symbols = " ".join(chemical_symbols[z] for z in model.elements)
    print(f"wrote {args.output} (mace, {model.config['dtype']}, elements {symbols}, cutoff {model.cutoff} Å) from {args.model}")
    runners = "equinet md" if model.structure_inputs else "equinet md or equinet export --elements ..."  # no charge/spin in LAMMPS graphs
    print(f"run it with equinet.Calculator('{args.output}'), {runners}; fine-tune it with model: {{init_from: {args.output}}}")
    return 0
