"""The example configs in examples/: each one validates and builds its model, and the
rMD17 recipe trains end to end on a tiny .npz in kcal/mol (units converted to eV)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.units import kcal, mol

from equinet import Calculator, load_model
from equinet.cli import main
from equinet.config import load_config
from equinet.datasets import atoms_to_graph, compute_statistics
from equinet.datasets.generate import GENERATORS
from equinet.datasets.labels import read_labels
from equinet.potentials import build_model
from equinet.training.finetune import load_pretrained

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


@pytest.fixture(scope="module")
def emt_statistics():
    graphs = [atoms_to_graph(atoms, 5.0, labels=read_labels(atoms)) for atoms in GENERATORS["emt-alloys"](6, seed=0)]
    return compute_statistics(graphs)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda path: path.name)
def test_example_config_validates_and_builds(path, tmp_path, emt_statistics):
    data = yaml.safe_load(path.read_text())["data"]
    overrides = []
    for key in ("train", "valid", "test"):  # files users download (rMD17): stand-ins
        if key in data:
            stand_in = tmp_path / f"{key}.npz"
            _write_rmd17_npz(stand_in, _methanol_frames(2))
            overrides.append(f"data.{key}={stand_in}")
    if "init_from" in yaml.safe_load(path.read_text())["model"]:  # a file users download: a small MACE file
        overrides.append(f"model.init_from={MACE_FILE}")
    config = load_config(path, overrides)
    if "init_from" in config.model:
        model = load_pretrained(config.model["init_from"], config.model.get("dtype"))
    else:
        model = build_model(config.model, emt_statistics)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert config.trainer.max_epochs or config.trainer.max_time_minutes


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
