"""``equinet elastic MODEL STRUCTURE [--relax FMAX]``: the elastic tensor of a periodic cell,
by autograd (clamped ions and the relaxed-ion correction)."""

from __future__ import annotations

import argparse
from pathlib import Path

from equinet.commands import read_structure, relaxed


def register(commands) -> None:
    parser = commands.add_parser("elastic", help="elastic tensor of a periodic cell, GPa (second derivatives by autograd)")
    parser.add_argument("model", type=Path, help="a model file (model.pt or a MACE .model)")
    parser.add_argument("structure", type=Path, help="a periodic cell, any ASE-readable file (last frame is used)")
    parser.add_argument("--relax", type=float, default=None, metavar="FMAX", help="first relax the atoms (fixed cell) to this max force, eV/Å")
    parser.add_argument("--clamped", action="store_true", help="clamped ions only (no inner relaxation)")
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from equinet.calculator import Calculator

    atoms = read_structure(args.structure)
    atoms.calc = Calculator(args.model, device=args.device)
    relaxed(atoms, args.relax)
    tensor = atoms.calc.get_elastic_tensor(atoms, relaxed_ions=not args.clamped)
    kind = "clamped-ion" if args.clamped else "relaxed-ion"
    print(f"{kind} elastic tensor of {args.structure} (GPa, Voigt order xx yy zz yz xz xy):")
    for row in tensor:
        print("  " + "".join(f"{value:10.2f}" for value in row))
    bulk_modulus = tensor[:3, :3].sum() / 9
    print(f"Voigt bulk modulus {bulk_modulus:.2f} GPa; stress of the cell {abs(atoms.get_stress()).max():.1e} eV/Å³")
    return 0
