"""``equinet select TRAJ --committee committee.yaml -n K -o pick.extxyz``: the frames a
committee is least sure about, to label next."""

from __future__ import annotations

import argparse
from pathlib import Path

from equinet.commands import positive_int, read_structure


def register(commands) -> None:
    parser = commands.add_parser("select", help="pick the frames a committee is least sure about, to label next (active learning)")
    parser.add_argument("trajectory", type=Path, help="frames to choose from: any ASE-readable file (e.g. equinet md's output)")
    parser.add_argument("--committee", type=Path, nargs="+", required=True, help="a committee file (committee.yaml) or two or more model files")
    parser.add_argument("-n", "--count", type=positive_int, required=True, help="how many frames to pick")
    parser.add_argument("-o", "--output", type=Path, required=True, help="file for the picked frames (any ASE format, e.g. pick.extxyz)")
    parser.add_argument("--min-rmsd", type=float, default=0.1, help="Å: the picked frames differ from each other by at least this RMSD (default 0.1)")
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import ase.io

    from equinet.calculator import Calculator
    from equinet.files import ase_format, atomic_write, output_file
    from equinet.selection import committee_force_spread, select_uncertain

    output_file(args.output, "--output", inputs=[args.trajectory, *args.committee])
    form = ase_format(args.output, "--output")
    if not args.min_rmsd >= 0:
        raise ValueError(f"--min-rmsd {args.min_rmsd}: give a distance in Å, 0 or more")
    calculator = Calculator(args.committee, device=args.device)
    if len(calculator.models) < 2:
        raise ValueError("--committee: give a committee file or two or more models; one model has no spread")
    frames = read_structure(args.trajectory, ":")
    spread = committee_force_spread(frames, calculator)
    picked = select_uncertain(frames, spread, args.count, args.min_rmsd)
    chosen = []
    for index in picked:
        atoms = frames[index].copy()
        atoms.info.update(source_frame=index, committee_force_std_max=float(spread[index]))
        chosen.append(atoms)
    with atomic_write(args.output) as partial:
        ase.io.write(partial, chosen, format=form)
    print(
        f"picked {len(picked)} of {len(frames)} frames from {args.trajectory} (largest per-atom force std "
        f"{spread[picked].max():.3f} to {spread[picked].min():.3f} eV/Å; committee of {len(calculator.models)}) into {args.output}"
    )
    if len(picked) < args.count:
        print(f"only {len(picked)} frames differ from each other by --min-rmsd {args.min_rmsd} Å or more")
    return 0
