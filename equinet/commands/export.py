"""``equinet export MODEL -o OUT``: the model (or a committee) as one graph for MD codes (LAMMPS),
TorchScript or AOTInductor."""

from __future__ import annotations

import argparse
from pathlib import Path

from equinet.commands import positive_float


def register(commands) -> None:
    parser = commands.add_parser("export", help="write a model or a committee as one graph for LAMMPS (pair_style equinet)")
    parser.add_argument("model", type=Path, nargs="+", help="a deployed model (model.pt); several, or a committee.yaml, export a committee (its mean, and per-atom force std for fix pair)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the exported file: model-lammps.pt (TorchScript) or model-lammps.pt2 (AOTInductor)")
    parser.add_argument("--format", choices=("torchscript", "aotinductor"), default=None, help="torchscript (seconds to write) or aotinductor (compiled C++, minutes to write); default: from the suffix of --output")
    parser.add_argument("--dtype", choices=("float32", "float64"), default=None, help="precision of the graph (default: the model's)")
    parser.add_argument("--elements", nargs="+", metavar="SYMBOL", help="export only these of the model's elements, in this order (default: all); "
                        "a foundation model with 89 elements exports and runs faster for the few a simulation holds")
    parser.add_argument("--max-memory-gb", type=positive_float, default=None, metavar="GB",
                        help="compute edges and heavy per-atom steps in blocks sized to this memory, each recomputed in the backward: "
                        "bounded memory per atom for large systems, at some cost in time (default: all at once)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from equinet.committee import expand_committees
    from equinet.export import export_model
    from equinet.files import output_file
    from equinet.model_io import load_model

    members = expand_committees(args.model)
    output_file(args.output, "--output", inputs=[*args.model, *members])
    models = [load_model(member) for member in members]
    dtype = getattr(torch, args.dtype) if args.dtype else None
    if (args.format or ("aotinductor" if args.output.suffix == ".pt2" else None)) == "aotinductor":
        print("compiling the graph with AOTInductor (a few minutes) ...", flush=True)
    elements = None if args.elements is None else [_atomic_number(symbol) for symbol in args.elements]
    metadata = export_model(models, args.output, dtype=dtype, format=args.format, elements=elements, max_memory_gb=args.max_memory_gb)
    symbols = " ".join(_symbol(z) for z in metadata["elements"])
    what = metadata["model"] if metadata["members"] == 1 else f"a committee of {metadata['members']}: {metadata['model']}"
    print(f"wrote {args.output} ({what}, {metadata['dtype']}, elements {symbols}, cutoff {metadata['cutoff']} Å)")
    if metadata["blocks"] is not None:
        blocks = metadata["blocks"]
        atoms = "all atoms at once" if blocks["atoms"] is None else f"{blocks['atoms']:,} atoms"
        print(f"in blocks of {blocks['edges']:,} edges and {atoms} (--max-memory-gb {args.max_memory_gb:g})")
    print("in LAMMPS (units metal, newton on), after 'equinet lammps build-plugin':")
    print("  plugin load /absolute/path/to/equinet_plugin.so")
    print("  pair_style equinet")
    print(f"  pair_coeff * * {args.output} <one element per atom type, from: {symbols}>")
    if metadata["members"] > 1:
        print("  fix std all pair 1 equinet forces_std 0   # f_std: per-atom force std (eV/Å), for dumps and thresholds")
    return 0


def _symbol(z: int) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[z]


def _atomic_number(symbol: str) -> int:
    from ase.data import atomic_numbers

    if symbol not in atomic_numbers:
        raise ValueError(f"--elements: {symbol!r} is not a chemical symbol (e.g. Cu, O)")
    return atomic_numbers[symbol]
