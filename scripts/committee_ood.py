"""Does a committee's spread grow where it extrapolates? A committee trained on fcc Cu/Ni
(EMT labels) is evaluated in distribution and on bcc, strained and liquid-like cells.

    python scripts/committee_ood.py [--members 3 --epochs 30 --train 160 --out .bench/committee_ood]

Trains ``--members`` small MACE models that differ only in their seed (``trainer.ensemble``)
on rattled, slightly strained 32-atom fcc Cu/Ni cells labelled by ASE's EMT, then reports
for each test set (fcc like the training data; bcc; fcc strained by ±8%; fcc rattled by
0.25 Å, liquid-like) the mean per-structure force spread (mean per-atom norm of the force
std, eV/Å) and the force RMSE of the committee mean (eV/Å), and the Spearman correlation of
spread and error over all test structures together (``equinet evaluate`` on the committee).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _cells(kind: str, count: int, seed: int):
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        if kind == "bcc":
            atoms = bulk("Cu", "bcc", a=2.87, cubic=True) * (2, 2, 4)
        else:
            atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
        atoms.symbols[rng.choice(len(atoms), len(atoms) // 3, replace=False)] = "Ni"
        strain = {"strained": rng.choice([0.92, 1.08])}.get(kind, rng.uniform(0.98, 1.02))
        atoms.set_cell(atoms.cell.array * strain, scale_atoms=True)
        atoms.rattle({"liquid": 0.25}.get(kind, 0.08), seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
        frames.append(atoms)
    return frames


def main() -> None:
    from ase.io import write

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--train", type=int, default=160, help="training + validation structures")
    parser.add_argument("--test", type=int, default=30, help="structures per test set")
    parser.add_argument("--out", type=Path, default=ROOT / ".bench" / "committee_ood")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out / "train.extxyz", _cells("fcc", args.train, seed=0))
    kinds = ("fcc", "bcc", "strained", "liquid")
    for index, kind in enumerate(kinds):
        write(args.out / f"test_{kind}.extxyz", _cells(kind, args.test, seed=100 + index))
    write(args.out / "test_all.extxyz", [a for kind in kinds for a in _cells(kind, args.test, seed=100 + kinds.index(kind))])
    config = {
        "data": {"train": str(args.out / "train.extxyz"), "split": [0.85, 0.15, 0.0], "batch_size": 8},
        "model": {"name": "mace", "dtype": "float32", "cutoff": 4.5, "hidden_irreps": "16x0e+16x1o", "max_ell": 2, "correlation": 2, "radial_hidden": [32]},
        "trainer": {"max_epochs": args.epochs, "ensemble": args.members, "progress_bar": False, "accelerator": "cpu"},
        "output": str(args.out / "run"),
    }  # fmt: skip
    (args.out / "config.yaml").write_text(yaml.safe_dump(config))
    equinet = [sys.executable, "-m", "equinet.cli"]
    subprocess.run([*equinet, "train", str(args.out / "config.yaml"), "--overwrite"], check=True, capture_output=True)
    committee = args.out / "run" / "committee.yaml"
    print(f"committee of {args.members} small MACE models, {args.epochs} epochs on {args.train} fcc Cu/Ni cells (EMT)")
    print("| test set | structures | mean force spread (eV/Å) | force RMSE of the mean (eV/Å) |")
    print("| --- | --- | --- | --- |")
    for kind in (*kinds, "all"):
        output = args.out / f"eval_{kind}"
        subprocess.run([*equinet, "evaluate", str(committee), str(args.out / f"test_{kind}.extxyz"), "--output", str(output)], check=True, capture_output=True)
        metrics = json.loads((output / "metrics.json").read_text())["committee"]
        if kind == "all":
            print(f"\nSpearman correlation of per-structure force spread and error over all {metrics['structures']} test structures: "
                  f"{metrics['spearman_force_spread_error']:.3f}")
        else:
            print(f"| {kind} | {metrics['structures']} | {metrics['mean_force_spread']:.4f} | {metrics['mean_force_rmse']:.4f} |")


if __name__ == "__main__":
    main()
