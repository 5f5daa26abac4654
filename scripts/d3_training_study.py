"""Does learning only the short-range rest pay? Two models trained on the same total labels
(EMT + D3), one on the totals and one on the totals minus D3 (``data.dispersion``, with D3
added back by the calculator), compared with the total labels.

    python scripts/d3_training_study.py [--epochs 30 --train 160 --test 30 --out .bench/d3_training_study]

The data are rattled 32-atom fcc Cu/Ni cells labelled by ASE's EMT plus D3(BJ) for PBE
(s-dftd3, two-body and coordination cutoffs 21.2 Å), with cells scaled by 0.96 to 1.04 for
training and two test sets: the same distribution, and cells expanded by 1.08 (outside the
training volumes, where D3's tail beyond the model's 4.5 Å cutoff matters most). Both models
are the same small MACE (float64, same seed and epochs). Reported: energy MAE per atom and
force MAE against the total labels, computed here from ``equinet.Calculator`` (which adds D3
back for the model trained without it).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
D3 = {"damping": "d3bj", "functional": "pbe"}


def _cells(count: int, scales: tuple[float, float], seed: int):
    """Rattled fcc Cu/Ni cells labelled with EMT + D3 energies and forces."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    from equinet.dispersion import D3Dispersion

    d3 = D3Dispersion(**D3)
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
        atoms.symbols[rng.choice(len(atoms), len(atoms) // 3, replace=False)] = "Ni"
        atoms.set_cell(atoms.cell.array * rng.uniform(*scales), scale_atoms=True)
        atoms.rattle(0.08, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        dispersion = d3(atoms)
        energy, forces = atoms.get_potential_energy() + dispersion["energy"], atoms.get_forces() + dispersion["forces"]
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    return frames


def _errors(model: Path, frames) -> tuple[float, float]:
    """Energy MAE per atom (meV/atom) and force MAE (meV/Å) against the labels."""
    from equinet import Calculator

    calculator = Calculator(model)
    energy, forces = [], []
    for atoms in frames:
        energy.append(abs(calculator.get_potential_energy(atoms) - atoms.get_potential_energy()) / len(atoms))
        forces.append(np.abs(calculator.get_forces(atoms) - atoms.get_forces()).ravel())
    return 1000 * float(np.mean(energy)), 1000 * float(np.mean(np.concatenate(forces)))


def main() -> None:
    from ase.io import read, write

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--train", type=int, default=160, help="training + validation structures")
    parser.add_argument("--test", type=int, default=30, help="structures per test set")
    parser.add_argument("--out", type=Path, default=ROOT / ".bench" / "d3_training_study")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out / "train.extxyz", _cells(args.train, (0.96, 1.04), seed=0))
    tests = {"same volumes": _cells(args.test, (0.96, 1.04), seed=1), "expanded 1.08": _cells(args.test, (1.08, 1.08), seed=2)}
    rows = []
    for name, data in (("totals", {}), ("totals minus D3", {"dispersion": D3})):
        output = args.out / name.replace(" ", "_")
        config = {
            "data": {"train": str(args.out / "train.extxyz"), "split": [0.85, 0.15, 0.0], "batch_size": 8, **data},
            "model": {"name": "mace", "dtype": "float64", "cutoff": 4.5, "hidden_irreps": "16x0e+16x1o", "max_ell": 2, "correlation": 2, "radial_hidden": [32]},
            "loss": {"forces_weight": 10.0},
            "trainer": {"max_epochs": args.epochs, "progress_bar": False, "accelerator": "cpu"},
            "output": str(output),
        }  # fmt: skip
        (args.out / "config.yaml").write_text(yaml.safe_dump(config))
        subprocess.run([sys.executable, "-m", "equinet.cli", "train", str(args.out / "config.yaml"), "--overwrite"], check=True, capture_output=True)
        rows.append((name, [_errors(output / "model.pt", frames) for frames in tests.values()]))
    train = read(args.out / "train.extxyz", ":")
    print(f"small MACE (16x0e+16x1o, r 4.5 Å), {args.epochs} epochs on {len(train)} Cu/Ni cells labelled EMT + D3(BJ, PBE); errors against the totals")
    print("| trained on | " + " | ".join(f"{name}: E MAE (meV/atom) | F MAE (meV/Å)" for name in tests) + " |")
    print("| --- |" + " --- | --- |" * len(tests))
    for name, errors in rows:
        print(f"| {name} | " + " | ".join(f"{e:.2f} | {f:.1f}" for e, f in errors) + " |")


if __name__ == "__main__":
    main()
