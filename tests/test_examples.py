"""The example configs in examples/: each one trains an epoch on a few frames, and the
rMD17 recipe trains end to end on a tiny .npz in kcal/mol (units converted to eV)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from ase.units import kcal, mol

from equinet import Calculator, load_model
from equinet.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
MACE_FILE = Path(__file__).resolve().parent / "data" / "mace" / "mp0.model"
KCAL_PER_MOL = kcal / mol  # eV


def _methanol_frames(count: int, seed: int = 0):
    """Rattled methanol molecules with EMT energies and forces (eV, eV/Å)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        atoms = molecule("CH3OH")
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        frames.append((atoms, atoms.get_potential_energy(), atoms.get_forces()))
    return frames


def _write_rmd17_npz(path: Path, frames) -> None:
    """rMD17 layout: nuclear_charges, coords (Å), energies (kcal/mol), forces (kcal/mol/Å)."""
    np.savez(
        path,
        nuclear_charges=frames[0][0].numbers,
        coords=np.stack([atoms.positions for atoms, _, _ in frames]),
        energies=np.array([energy for _, energy, _ in frames]) / KCAL_PER_MOL,
        forces=np.stack([forces for _, _, forces in frames]) / KCAL_PER_MOL,
    )


def _copper_file(path: Path, count: int) -> Path:
    """``count`` rattled EMT copper cells, a stand-in for the data a user brings (of elements
    the small MACE file knows)."""
    frames = []
    for seed in range(count):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.1, seed=seed)
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
        frames.append(atoms)
    write(path, frames)
    return path


@pytest.mark.parametrize("path", sorted(p for p in EXAMPLES.glob("*.yaml") if p.name != "rmd17.yaml"), ids=lambda path: path.name)
def test_example_config_trains_one_epoch(path, tmp_path, capsys):
    """Each example as a user runs it, cut to one epoch on a few frames (rMD17's has its own
    test below): the config validates, the model builds and trains, the test set is scored."""
    overrides = {"trainer.max_epochs": 1, "trainer.progress_bar": "false", "output": tmp_path / "run", "data.split": "[6, 2, 2]"}
    config = yaml.safe_load(path.read_text())
    if "generate" in config["data"]:
        overrides["data.generate.n"] = 10
    else:  # files users bring: a small MACE file and EMT frames
        overrides["data.train"] = _copper_file(tmp_path / "dft.extxyz", 10)
        if "init_from" in config["model"]:
            overrides["model.init_from"] = MACE_FILE
    argv = ["train", str(path)]
    for key, value in overrides.items():
        argv += ["--set", f"{key}={value}"]
    assert main(argv) == 0
    assert "test set (2 structures)" in capsys.readouterr().out
    assert (tmp_path / "run" / "model.pt").is_file()


def test_rmd17_example_trains_on_npz_in_kcal_per_mol(tmp_path, capsys):
    frames = _methanol_frames(14)
    _write_rmd17_npz(tmp_path / "train.npz", frames[:10])
    _write_rmd17_npz(tmp_path / "test.npz", frames[10:])
    small = {
        "data.train": tmp_path / "train.npz", "data.test": tmp_path / "test.npz", "data.split": "[8, 2, 0]",
        "model.hidden_irreps": "4x0e+4x1o", "model.max_ell": 1, "model.correlation": 2, "model.radial_hidden": "[8]",
        "trainer.max_epochs": 1, "trainer.progress_bar": "false", "output": tmp_path / "run",
    }  # fmt: skip
    argv = ["train", str(EXAMPLES / "rmd17.yaml")]
    for key, value in small.items():
        argv += ["--set", f"{key}={value}"]
    assert main(argv) == 0
    assert "test set (4 structures)" in capsys.readouterr().out

    # The model works in eV: its reference energy of methanol, fitted by least squares to the
    # training frames (all methanol), is their mean energy, so within their range in eV (the
    # frames in kcal/mol would put it 23x further out).
    training_energies = [energy for _, energy, _ in frames[:10]]
    model = load_model(tmp_path / "run" / "model.pt")
    reference = sum(model.statistics["atomic_energies"][int(z)] for z in frames[0][0].numbers)
    assert min(training_energies) - 1e-9 <= reference <= max(training_energies) + 1e-9
    atoms = frames[10][0]
    atoms.calc = Calculator(tmp_path / "run" / "model.pt", dtype=torch.float64)
    assert np.isfinite(atoms.get_potential_energy()) and np.isfinite(atoms.get_forces()).all()


def test_the_operators_example_runs_and_is_equivariant():
    done = subprocess.run([sys.executable, str(EXAMPLES / "operators.py")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    error = float(done.stdout.strip().splitlines()[-1].split()[-1])
    assert error < 1e-12
