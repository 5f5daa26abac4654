"""``equinet md MODEL STRUCTURE [--ensemble nve|nvt|npt --temperature K --timestep fs --steps N --output traj]``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from equinet.commands import positive_int, read_structure
from equinet.dispersion import DAMPINGS


def register(commands) -> None:
    parser = commands.add_parser("md", help="molecular dynamics with a trained model (ASE)")
    parser.add_argument("model", type=Path, nargs="+", help="a model file (model.pt or a MACE .model); several, or a committee.yaml, make a committee, whose spread is logged")
    parser.add_argument("structure", type=Path, help="starting structure, any ASE-readable file (last frame is used)")
    parser.add_argument("--ensemble", choices=("nve", "nvt", "npt"), default="nve")
    parser.add_argument("--temperature", type=float, default=300.0, help="K: initial velocities, and the thermostat (default 300)")
    parser.add_argument("--timestep", type=float, default=1.0, help="fs (default 1)")
    parser.add_argument("--steps", type=positive_int, default=1000)
    parser.add_argument("--interval", type=positive_int, default=10, help="record every this many steps (default 10)")
    parser.add_argument("--pressure", type=float, default=1.01325, help="bar, for npt (default 1 atm)")
    parser.add_argument("--output", type=Path, default=Path("md.extxyz"), help="trajectory: .traj or any ASE format (default md.extxyz)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-force-std", type=float, default=None, metavar="EV_PER_A",
                        help="with a committee: stop once the largest per-atom force standard deviation passes this (eV/Å)")
    parser.add_argument("--on-uncertain", choices=("stop", "save"), default="stop",
                        help="past --max-force-std: stop (default), or go on and write those frames to OUTPUT_uncertain.extxyz")
    parser.add_argument("--backend", default="auto", help="operator backends: auto (the fastest exact one here, default), torch (the reference), cpp, triton, cueq")
    parser.add_argument("--dispersion", choices=(*DAMPINGS, "none"), default=None,
                        help="add DFT-D3 with this damping (needs equinet[d3]); default: the D3 a model trained with data.dispersion records; none: no D3")
    parser.add_argument("--functional", default="pbe", help="the DFT functional of the training data, for D3's parameters (default pbe)")
    parser.add_argument("--max-memory-gb", type=float, default=None,
                        help="GiB for one force evaluation: edges are processed in blocks that fit (default: half the free memory)")
    parser.add_argument("--born-charges", action="store_true",
                        help="with a dipole model: write each recorded frame's Born charges (per-atom array born_charges, 9 columns d mu_a / d r_b, e)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from equinet.calculator import Calculator
    from equinet.files import ase_format, output_file
    from equinet.md import plot_md, run_md
    from equinet.potentials.accelerate import backends_in_use

    stem = args.output.with_suffix("")
    log, plot = Path(f"{stem}.log"), Path(f"{stem}.png")
    uncertain = Path(f"{stem}_uncertain.extxyz") if args.on_uncertain == "save" else None
    for path in (args.output, log, plot, uncertain):
        if path is not None:
            output_file(path, "--output", inputs=[args.structure, *args.model])
    ase_format(args.output, "--output")
    atoms = read_structure(args.structure)
    dispersion = False if args.dispersion == "none" else args.dispersion
    atoms.calc = Calculator(
        args.model, device=args.device, backend=args.backend, dispersion=dispersion, functional=args.functional, max_memory_gb=args.max_memory_gb
    )
    block = atoms.calc.model.edge_block_size
    if block is not None:
        print(f"memory: {atoms.calc.memory_gb:.1f} GiB per evaluation; edges in blocks of {block:,} when there are more", flush=True)
    members = len(atoms.calc.models)
    if args.max_force_std is not None and not (members > 1 and args.max_force_std > 0):
        raise ValueError(f"--max-force-std {args.max_force_std}: give a positive threshold in eV/Å and two or more models (a committee)")
    if uncertain is not None and args.max_force_std is None:
        raise ValueError("--on-uncertain save writes the frames past --max-force-std: give --max-force-std too")
    used = backends_in_use(atoms.calc.model)
    if used:
        print("backends: " + ", ".join(f"{family} {backend}" for family, backend in sorted(used.items())), flush=True)
    if atoms.calc.dispersion is not None:
        recorded = " (recorded in the model file)" if args.dispersion is None else ""
        print(f"dispersion: {atoms.calc.dispersion}{recorded}", flush=True)
    result = run_md(
        atoms, args.ensemble, args.temperature, args.timestep, args.steps, args.interval,
        trajectory=args.output, log=log, pressure_bar=args.pressure, seed=args.seed, max_force_std=args.max_force_std,
        uncertain=uncertain, born_charges=args.born_charges,
    )
    plot = plot_md(result, plot)
    steps = round(result.time_fs[-1] / args.timestep)
    print(
        f"{steps} steps of {args.ensemble} MD ({len(atoms)} atoms, {steps * args.timestep / 1000:g} ps) "
        f"at {result.steps_per_second:.1f} steps/s; final T {result.temperature[-1]:.0f} K\n"
        f"total-energy drift {1000 * result.drift_per_atom:+.3f} meV/atom over the run\n"
        f"trajectory {args.output}, log {stem}.log, plot {plot}"
    )
    if members > 1:
        print(f"committee of {members}: largest per-atom force std {np.nanmax(result.max_force_std):.4f} eV/Å")
    if uncertain is not None:
        print(f"{result.uncertain_frames} recorded frames passed --max-force-std {args.max_force_std}: written to {uncertain}")
    if result.stopped_early:
        print(f"stopped at {result.time_fs[-1]:g} fs: the force std {result.max_force_std[-1]:.4f} eV/Å passed --max-force-std {args.max_force_std}")
        return 1
    return 0
