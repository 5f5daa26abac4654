"""Accuracy on rMD17 at equal hyper-parameters and epochs: `equinet train` against mace-torch's `mace_run_train`.

    python scripts/bench_accuracy.py DATA_DIR [--epochs 40 --molecules ethanol uracil --threads 2 --skip-mace
                                              --families mace mace-gaunt tensornet nequip escn escn-gate
                                              --set optimizer.lr=0.005 ...]

DATA_DIR holds ``ethanol/train.xyz`` and ``ethanol/test_MD.xyz`` (extended XYZ, eV) and
``rmd17/rmd17_uracil_{train,test}_01.npz`` (rMD17 .npz, kcal/mol). Both are read with
equinet's readers (so the .npz's units are converted by them), split 950 train / 50
validation from the train file (seed 0) and written, with the test file, as extxyz in
eV with ``REF_energy``/``REF_forces`` labels that both codes read. Both train the recipe
of ``examples/rmd17.yaml`` with equinet's default training settings (MACE 64x0e+64x1o,
max_ell 3, correlation 3, 2 interactions, r_cut 5 Å, float64, batch 5, energy:forces
weights 1:1000 on per-atom energy and force components, Adam lr 0.01 with AMSGrad,
plateau scheduler, EMA 0.99; from 3/4 of the epochs on, as ``mace_run_train`` does by
default, a second stage with energy:forces 1000:100 and lr 0.001, where mace-torch also
averages the stage's weights (SWA) and equinet keeps its EMA) for ``--epochs`` epochs,
each reference energy fitted to the training set by least squares (equinet refits them to
the model's energy errors when stage two starts, ``loss.stage_two.refit_atomic_energies``;
mace-torch keeps them). Each trained model is then evaluated the same way, through its
ASE calculator on the test file:
total-energy MAE/RMSE (meV) and force-component MAE/RMSE (meV/Å), as the MACE paper
reports them. s/epoch is the training command's wall time divided by the epochs
(start-up and preprocessing included, the same for both).

``--families`` trains equinet's other model families too (MACE with the Gaunt many-body
product, TensorNet, NequIP, eSCN with its S2 activation or a gate; sizes in ``FAMILIES``) on the same recipe, replacing only
its model; mace-torch is compared with the MACE one. ``--set KEY=VALUE`` changes the recipe
for every run, both codes (e.g. a learning rate to try).

mace-torch runs in its own virtual environment (``.bench/mace-venv``, created on first
use). Never run by the test suite: the data are not part of the project.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from peers import MACE_TORCH, PEER_ENV, machine, mace_python, mace_run_train

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "examples" / "rmd17.yaml"
WORK = ROOT / ".bench" / "accuracy"
# equinet's other families on the same recipe, at sizes whose epochs cost about what
# the MACE recipe's do (float64 and r_cut 5 Å like it); mace-torch compares with `mace`.
FAMILIES = {
    "mace": None,  # the model of examples/rmd17.yaml
    "mace-gaunt": {"name": "mace", "product": "gaunt", "dtype": "float64", "cutoff": 5.0, "hidden_irreps": "64x0e+64x1o",
                   "max_ell": 3, "correlation": 3, "num_interactions": 2, "radial_hidden": [64, 64, 64]},
    "tensornet": {"name": "tensornet", "dtype": "float64", "cutoff": 5.0, "hidden_channels": 64, "num_layers": 2, "num_rbf": 32},
    "nequip": {"name": "nequip", "dtype": "float64", "cutoff": 5.0, "num_channels": 32, "l_max": 2, "num_layers": 4},
    "escn": {"name": "escn", "dtype": "float64", "cutoff": 5.0, "num_channels": 32, "l_max": 4, "m_max": 2, "num_layers": 2},
}
FAMILIES["escn-gate"] = {**FAMILIES["escn"], "nonlinearity": "gate"}
MOLECULES = {
    "ethanol": ("ethanol/train.xyz", "ethanol/test_MD.xyz", "eV"),
    "uracil": ("rmd17/rmd17_uracil_train_01.npz", "rmd17/rmd17_uracil_test_01.npz", "kcal/mol"),
}
NUM_TRAIN, NUM_VALID = 950, 50


# ---------------------------------------------------------------- worker side (either interpreter)


def _errors(calculator, test_file: Path) -> dict:
    """Total-energy (meV) and force-component (meV/Å) errors of ``calculator`` on ``test_file``."""
    import numpy as np
    from ase.io import read

    energy_errors, force_errors = [], []
    for atoms in read(test_file, ":"):
        reference_energy, reference_forces = atoms.info["REF_energy"], atoms.arrays["REF_forces"]
        atoms.calc = calculator
        energy_errors.append(1000 * (atoms.get_potential_energy() - reference_energy))
        force_errors.append(1000 * (atoms.get_forces() - reference_forces).ravel())
    energy, forces = np.array(energy_errors), np.concatenate(force_errors)
    return {
        "energy_mae": float(np.abs(energy).mean()), "energy_rmse": float(np.sqrt((energy**2).mean())),
        "forces_mae": float(np.abs(forces).mean()), "forces_rmse": float(np.sqrt((forces**2).mean())),
        "structures": len(energy),
    }  # fmt: skip


def worker(code: str, model: Path, test_file: Path) -> None:
    import torch

    if code == "equinet":
        from equinet import Calculator

        calculator = Calculator(model, dtype=torch.float64)
    else:
        from mace.calculators import MACECalculator

        calculator = MACECalculator(model_paths=str(model), device="cpu", default_dtype="float64")
    print(json.dumps(_errors(calculator, test_file)))


# ---------------------------------------------------------------- driver side


def write_splits(data_dir: Path, molecule: str, folder: Path) -> None:
    """train/valid/test.extxyz (eV, REF_ labels) from the molecule's files, read by equinet."""
    from ase.io import write

    from equinet.datasets import split_dataset
    from equinet.datasets.read import iter_structures

    def frames(path: Path, unit: str):
        for atoms, labels in iter_structures(path, energy_unit=unit):
            atoms.info["REF_energy"] = float(labels.energy)
            atoms.arrays["REF_forces"] = labels.forces
            yield atoms

    train_file, test_file, unit = MOLECULES[molecule]
    train, valid = split_dataset(list(frames(data_dir / train_file, unit)), [NUM_TRAIN, NUM_VALID], seed=0)
    folder.mkdir(parents=True, exist_ok=True)
    write(folder / "train.extxyz", list(train))
    write(folder / "valid.extxyz", list(valid))
    write(folder / "test.extxyz", list(frames(data_dir / test_file, unit)))


def stage_two_start(epochs: int) -> int:
    """mace_run_train's default start of its second stage (SWA), used by both codes."""
    return max(1, epochs // 4 * 3)


def recipe(data: Path, epochs: int, output: Path, seed: int, model: dict | None = None, extra: list[str] = ()) -> tuple[list[str], dict]:
    """The ``--set`` overrides of ``examples/rmd17.yaml`` for this benchmark (``model``
    replacing its model, then the ``extra`` ones), and the resulting training config with every
    default filled in (what mace-torch mirrors)."""
    from equinet.config import load_config

    overrides = {
        "loss.stage_two.start_epoch": stage_two_start(epochs),
        "data.train": data / "train.extxyz", "data.valid": data / "valid.extxyz", "data.test": data / "test.extxyz",
        "data.split": "[1.0, 0.0, 0.0]", "data.energy_unit": "eV", "data.energy_key": "REF_energy",
        "data.forces_key": "REF_forces", "trainer.max_epochs": epochs, "trainer.seed": seed,
        "trainer.progress_bar": "false", "output": output,
    }  # fmt: skip
    if model is not None:
        overrides["model"] = json.dumps(model)  # JSON is YAML: --set reads it as a mapping
    assignments = [f"{key}={value}" for key, value in overrides.items()] + list(extra)
    return assignments, load_config(RECIPE, assignments).model_dump(mode="json")


def equinet_command(assignments: list[str]) -> list[str]:
    command = [str(Path(sys.executable).parent / "equinet"), "train", str(RECIPE), "--overwrite"]
    for assignment in assignments:
        command += ["--set", assignment]
    return command


def mace_command(config: dict, data: Path, epochs: int, python: Path, seed: int) -> list[str]:
    """`mace_run_train` with the hyper-parameters of the equinet config, stage two included."""
    stage_two = config["loss"]["stage_two"]
    return mace_run_train(python, config, data, epochs, seed) + [
        "--loss", "weighted", "--swa", "--start_swa", str(stage_two["start_epoch"]), "--swa_lr", str(stage_two["lr"]),
        "--swa_energy_weight", str(stage_two["energy_weight"]), "--swa_forces_weight", str(stage_two["forces_weight"]),
    ]


def run(command: list[str], folder: Path, env: dict) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} failed in {folder}:\n{(done.stdout + done.stderr)[-3000:]}")
    return time.perf_counter() - start


def evaluate(python: Path, code: str, model: Path, test_file: Path, env: dict) -> dict:
    command = [str(python), __file__, "--worker", code, "--model", str(model), str(test_file)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"evaluating {model} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="folder with ethanol/ and rmd17/ (see above); a test file with --worker")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--molecules", nargs="+", choices=sorted(MOLECULES), default=["ethanol", "uracil"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (OMP_NUM_THREADS)")
    parser.add_argument("--seed", type=int, default=0, help="training seed of both codes (the split stays fixed)")
    parser.add_argument("--skip-mace", action="store_true", help="train equinet only")
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=["mace"], help="equinet model families to train")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change the recipe for both codes (repeatable)")
    parser.add_argument("--worker", choices=("equinet", "mace"), help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.model, args.data_dir)
        return

    env = {**PEER_ENV, "OMP_NUM_THREADS": str(args.threads)}
    mace = None if args.skip_mace else mace_python()
    rows = []
    for molecule in args.molecules:
        data = WORK / molecule / "data"
        write_splits(args.data_dir, molecule, data)
        result = {}
        for family in args.families:
            code = "equinet" if family == "mace" else f"equinet-{family}"
            assignments, _ = recipe(data, args.epochs, WORK / molecule / code, args.seed, FAMILIES[family], args.set)
            seconds = run(equinet_command(assignments), WORK / molecule, env)
            errors = evaluate(Path(sys.executable), "equinet", WORK / molecule / code / "model.pt", data / "test.extxyz", env)
            result[code] = {**errors, "seconds": seconds}
            print(f"{molecule}: {code} trained in {seconds:.0f} s", flush=True)
        if mace:
            _, config = recipe(data, args.epochs, WORK / molecule / "equinet", args.seed, extra=args.set)
            folder = WORK / molecule / "mace"
            seconds = run(mace_command(config, data, args.epochs, mace, args.seed), folder, env)
            model = folder / "mace_stagetwo.model"  # its second-stage model, when that stage ran
            model = model if model.exists() else folder / "mace.model"
            result["mace"] = {**evaluate(mace, "mace", model, data / "test.extxyz", env), "seconds": seconds}
            print(f"{molecule}: mace-torch trained in {seconds:.0f} s", flush=True)
        rows.append((molecule, result))

    print(f"machine: {machine(args.threads)}")
    changes = f" with {', '.join(args.set)}" if args.set else ""
    print(f"rMD17, {NUM_TRAIN} train / {NUM_VALID} valid, recipe examples/rmd17.yaml{changes}, {args.epochs} epochs, seed {args.seed}; peer {MACE_TORCH}")
    print(f"{'molecule':10}{'code':18}{'E MAE':>8}{'E RMSE':>8}{'F MAE':>8}{'F RMSE':>8}{'s/epoch':>9}   (meV, meV/Å)")
    for molecule, result in rows:
        for code, r in result.items():
            print(f"{molecule:10}{code:18}{r['energy_mae']:8.2f}{r['energy_rmse']:8.2f}{r['forces_mae']:8.2f}{r['forces_rmse']:8.2f}{r['seconds'] / args.epochs:9.1f}")
        if "mace" in result and "equinet" in result:
            ours, theirs = result["equinet"], result["mace"]
            print(
                f"{molecule:10}{'ratio':18}{ours['energy_mae'] / theirs['energy_mae']:7.2f}x{'':8}"
                f"{ours['forces_mae'] / theirs['forces_mae']:7.2f}x{'':8}{ours['seconds'] / theirs['seconds']:8.2f}x"
            )


if __name__ == "__main__":
    main()
