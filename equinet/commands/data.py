"""``equinet data``: generate the embedded data sets and convert data files.

    equinet data generate emt-alloys OUT.extxyz [--n 1000 --seed 0]
    equinet data convert IN OUT.h5 [--energy-key K --forces-key K --stress-key K --energy-unit U --skip-bad]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from equinet.commands import positive_int


def register(commands) -> None:
    parser = commands.add_parser("data", help="generate the embedded data sets, convert data files")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    actions.required = True

    from equinet.datasets.generate import GENERATORS

    generate = actions.add_parser("generate", help="make a labelled data set (nothing is downloaded)")
    generate.add_argument("name", choices=sorted(GENERATORS), help="which data set")
    generate.add_argument("output", type=Path, help="output file: .extxyz (or any ASE format) or .h5")
    generate.add_argument("--n", type=positive_int, default=1000, help="number of structures (default 1000)")
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


def _output_format(output: Path, inputs: list[Path]) -> str | None:
    """The ASE format of ``output``, or None for the .h5 store, after checking the path."""
    from equinet.datasets.h5 import H5_SUFFIXES
    from equinet.files import ase_format, output_file

    output_file(output, "output", inputs)
    return None if output.suffix in H5_SUFFIXES else ase_format(output, "output")


def _write(output: Path, structures, format: str | None) -> int:
    """Write (atoms, labels) pairs to ``output`` (all or nothing): streamed for .h5
    (``format`` None), through ASE in ``format`` otherwise."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from equinet.datasets.h5 import write_h5
    from equinet.files import atomic_write

    if format is None:
        with atomic_write(output) as partial:
            return write_h5(partial, structures)
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
    with atomic_write(output) as partial:
        write(partial, frames, format=format)
    return len(frames)


def run_generate(args: argparse.Namespace) -> int:
    from equinet.datasets.generate import GENERATORS
    from equinet.datasets.labels import read_labels

    format = _output_format(args.output, [])
    frames = GENERATORS[args.name](args.n, seed=args.seed)
    count = _write(args.output, ((atoms, read_labels(atoms)) for atoms in frames), format)
    print(f"wrote {count} structures to {args.output}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from equinet.datasets import DataError
    from equinet.datasets.graph import check_structure
    from equinet.datasets.read import iter_structures

    format = _output_format(args.output, [args.input])
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

    count = _write(args.output, valid(), format)
    print(f"wrote {count} structures to {args.output}" + (f"; skipped {len(skipped)} bad ones" if skipped else ""))
    return 0
