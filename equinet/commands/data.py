"""``equinet data``: generate the embedded data sets and convert data files.

    equinet data generate emt-alloys OUT.extxyz [--n 1000 --seed 0]
    equinet data convert IN OUT.h5 [--energy-key K --forces-key K --stress-key K --energy-unit U --skip-bad]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands) -> None:
    parser = commands.add_parser("data", help="generate the embedded data sets, convert data files")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    actions.required = True

    from equinet.datasets.generate import GENERATORS

    generate = actions.add_parser("generate", help="make a labelled data set (nothing is downloaded)")
    generate.add_argument("name", choices=sorted(GENERATORS), help="which data set")
    generate.add_argument("output", type=Path, help="output file: .extxyz (or any ASE format) or .h5")
    generate.add_argument("--n", type=int, default=1000, help="number of structures (default 1000)")
    generate.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same data")
    generate.set_defaults(run=run_generate)

    convert = actions.add_parser("convert", help="convert a data file (e.g. to the streaming .h5 store)")
    convert.add_argument("input", type=Path, help="any ASE-readable file, rMD17 .npz or equinet .h5")
    convert.add_argument("output", type=Path, help="output: .h5 (streaming store) or any ASE format")
    for label in ("energy", "forces", "stress"):
        convert.add_argument(f"--{label}-key", default=None, help=f"key of the {label} label in the input")
    convert.add_argument("--energy-unit", default="eV", help="unit of the input energies, e.g. kcal/mol (default eV)")
    convert.add_argument("--skip-bad", action="store_true", help="leave out invalid structures and count them")
    convert.set_defaults(run=run_convert)


def _write(output: Path, structures) -> int:
    """Write (atoms, labels) pairs to ``output``: streamed for .h5, through ASE otherwise."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from equinet.datasets.h5 import H5_SUFFIXES, write_h5

    if output.suffix in H5_SUFFIXES:
        return write_h5(output, structures)
    frames = []
    for atoms, labels in structures:
        results = {key: value for key, value in vars(labels).items() if value is not None}
        if "node_energy" in results:
            results["energies"] = results.pop("node_energy")
        if "stress" in results:
            s = results["stress"]
            results["stress"] = [s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]]
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    write(output, frames)
    return len(frames)


def run_generate(args: argparse.Namespace) -> int:
    from equinet.datasets.generate import GENERATORS
    from equinet.datasets.labels import read_labels

    frames = GENERATORS[args.name](args.n, seed=args.seed)
    count = _write(args.output, ((atoms, read_labels(atoms)) for atoms in frames))
    print(f"wrote {count} structures to {args.output}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from equinet.datasets import DataError
    from equinet.datasets.graph import check_structure
    from equinet.datasets.read import iter_structures

    keys = {"energy": args.energy_key, "forces": args.forces_key, "stress": args.stress_key}
    skipped = []

    def valid():
        frames = iter_structures(args.input, keys=keys, required=(), energy_unit=args.energy_unit)
        for frame, (atoms, labels) in enumerate(frames):
            try:
                check_structure(atoms, str(args.input), frame)
            except DataError as error:
                if not args.skip_bad:
                    raise
                skipped.append(error)
                continue
            yield atoms, labels

    count = _write(args.output, valid())
    print(f"wrote {count} structures to {args.output}" + (f"; skipped {len(skipped)} bad ones" if skipped else ""))
    return 0
