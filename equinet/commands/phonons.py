"""``equinet phonons MODEL STRUCTURE [--relax FMAX] [--band-structure PNG --supercell N N N]``:
Γ-point phonon frequencies from the model's Hessian (by autograd), and through phonopy the
band structure of the structure taken as a unit cell (:mod:`equinet.phonon_bands`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from equinet.commands import read_structure, relaxed

THZ_IN_INVERSE_CM = 33.35641  # 1 THz in cm⁻¹


def register(commands) -> None:
    parser = commands.add_parser("phonons", help="Γ-point phonon frequencies of a structure (Hessian by autograd)")
    parser.add_argument("model", type=Path, help="a model file (model.pt or a MACE .model)")
    parser.add_argument("structure", type=Path, help="any ASE-readable file (last frame is used); a cell is taken as the supercell")
    parser.add_argument("--relax", type=float, default=None, metavar="FMAX", help="first relax the atoms (fixed cell) to this max force, eV/Å")
    parser.add_argument(
        "--band-structure", type=Path, default=None, metavar="PNG",
        help="also plot the band structure of the structure as a unit cell, through phonopy (pip install 'equinet[phonons]')",
    )  # fmt: skip
    parser.add_argument("--supercell", type=int, nargs=3, default=(2, 2, 2), metavar="N", help="supercell of the band structure's force constants (default 2 2 2)")
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from equinet.calculator import Calculator
    from equinet.derivatives import gamma_frequencies

    atoms = read_structure(args.structure)
    atoms.calc = Calculator(args.model, device=args.device)
    relaxed(atoms, args.relax)
    frequencies = gamma_frequencies(atoms.calc.get_hessian(atoms), atoms.get_masses())
    print(f"Γ-point frequencies of {args.structure} ({len(atoms)} atoms, max force {abs(atoms.get_forces()).max():.1e} eV/Å):")
    print(f"  {'mode':>4}  {'THz':>10}  {'cm-1':>10}")
    for mode, value in enumerate(frequencies):
        print(f"  {mode:>4}  {value:10.4f}  {value * THZ_IN_INVERSE_CM:10.2f}")
    print("negative values are imaginary modes (the structure is not at a minimum along them)")
    if args.band_structure is not None:
        from equinet.phonon_bands import phonopy_from_hessian, plot_band_structure

        phonon = phonopy_from_hessian(atoms.calc, atoms, args.supercell)
        plot_band_structure(phonon, args.band_structure)
        size = "x".join(map(str, args.supercell))
        print(f"band structure ({size} supercell, {len(phonon.supercell)} atoms, force constants from the Hessian) written to {args.band_structure}")
    return 0
