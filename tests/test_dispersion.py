"""DFT-D3 on top of equinet potentials (equinet.dispersion, through s-dftd3): its forces,
stress and Hessian are the derivatives of its energy, and the calculator adds every D3
property to the model's."""

import sys

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.stress import full_3x3_to_voigt_6_stress
from small_models import ethanol, small_model, triclinic_alloy

from equinet import Calculator, save_model
from equinet.cli import main

pytest.importorskip("dftd3", reason="needs the d3 extra: pip install 'equinet[d3]'")
from equinet.dispersion import D3Dispersion  # noqa: E402


@pytest.fixture(scope="module")
def d3():
    return D3Dispersion("d3bj", "pbe", cutoff=10.0, cn_cutoff=10.0, three_body=True)


def _strained(atoms, strain):
    atoms = atoms.copy()
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    return atoms


def test_forces_stress_and_hessian_are_derivatives_of_the_energy(d3):
    atoms = triclinic_alloy() * (2, 2, 2)
    result = d3(atoms, energies=True)
    assert result["energies"].sum() == pytest.approx(result["energy"], rel=1e-12)
    assert result["energy"] < -0.5  # D3 binds: about -0.1 eV per metal atom here
    h = 1e-5
    for atom, axis in ((0, 0), (5, 2)):
        moved = [atoms.copy(), atoms.copy()]
        moved[0].positions[atom, axis] += h
        moved[1].positions[atom, axis] -= h
        force = -(d3(moved[0])["energy"] - d3(moved[1])["energy"]) / (2 * h)
        assert result["forces"][atom, axis] == pytest.approx(force, rel=1e-6, abs=1e-9)
    h = 1e-6  # small: a larger strain carries pairs across the hard cutoff
    for i, j in ((0, 0), (1, 2)):
        strain = np.zeros((3, 3))
        strain[i, j] = strain[j, i] = h if i == j else h / 2
        derivative = (d3(_strained(atoms, strain))["energy"] - d3(_strained(atoms, -strain))["energy"]) / (2 * h)
        assert result["stress"][i, j] == pytest.approx(derivative / atoms.get_volume(), rel=1e-5)

    water = molecule("H2O")
    hessian, h = d3.hessian(water), 1e-5
    for atom, axis in ((0, 2), (1, 1)):
        moved = [water.copy(), water.copy()]
        moved[0].positions[atom, axis] += h
        moved[1].positions[atom, axis] -= h
        column = -(d3(moved[0])["forces"] - d3(moved[1])["forces"]).reshape(-1) / (2 * h)
        np.testing.assert_allclose(hessian[:, 3 * atom + axis], column, rtol=1e-5, atol=1e-9)


def test_the_calculator_adds_d3_to_every_property(d3):
    model = small_model("mace")
    atoms = triclinic_alloy()
    plain, with_d3 = Calculator(model), Calculator(model, dispersion=d3)
    committee = Calculator([model, small_model("mace-residual")], dispersion=d3)
    dispersion = d3(atoms, energies=True)
    assert with_d3.get_potential_energy(atoms) == pytest.approx(plain.get_potential_energy(atoms) + dispersion["energy"], rel=1e-12)
    np.testing.assert_allclose(with_d3.get_forces(atoms), plain.get_forces(atoms) + dispersion["forces"], atol=1e-12)
    np.testing.assert_allclose(with_d3.get_stress(atoms), plain.get_stress(atoms) + full_3x3_to_voigt_6_stress(dispersion["stress"]), atol=1e-12)
    np.testing.assert_allclose(with_d3.get_potential_energies(atoms), plain.get_potential_energies(atoms) + dispersion["energies"], atol=1e-12)
    committee.get_potential_energy(atoms)
    assert committee.results["energies_committee"].mean() == pytest.approx(committee.results["energy"], rel=1e-12)
    assert committee.results["energies_committee"][0] == pytest.approx(with_d3.results["energy"], rel=1e-12)

    molecule_atoms = ethanol()
    np.testing.assert_allclose(
        Calculator(model, dispersion=d3).get_hessian(molecule_atoms), plain.get_hessian(molecule_atoms) + d3.hessian(molecule_atoms), atol=1e-10
    )
    with pytest.raises(ValueError, match="^the elastic tensor with D3 dispersion is not available"):
        with_d3.get_elastic_tensor(atoms)


def test_bad_d3_settings_are_one_line(monkeypatch):
    for kwargs, words in (
        ({"damping": "d4"}, "dispersion must be one of d3bj, d3zero, d3bjm, d3zerom, got 'd4'"),
        ({"functional": "pbe-typo"}, "s-dftd3 has no d3bj parameters for the functional 'pbe-typo'"),
        ({"cutoff": -1.0}, "D3 cutoffs must be positive distances in Å"),
    ):
        with pytest.raises(ValueError, match=f"^{words}"):
            D3Dispersion(**kwargs)
    monkeypatch.setitem(sys.modules, "dftd3", None)  # as if not installed
    with pytest.raises(ValueError, match=r"^D3 dispersion needs s-dftd3's Python package: pip install 'equinet\[d3\]'"):
        Calculator(small_model("mace"), dispersion="d3bj")


def test_md_with_d3(tmp_path, capsys):
    save_model(small_model("mace"), tmp_path / "model.pt")
    triclinic_alloy().write(tmp_path / "cell.extxyz")
    run = ["md", str(tmp_path / "model.pt"), str(tmp_path / "cell.extxyz"), "--steps", "2", "--interval", "1", "--output", str(tmp_path / "md.extxyz")]
    assert main([*run, "--dispersion", "d3zero", "--functional", "pbe"]) == 0
    assert "dispersion: D3(d3zero, pbe, cutoff 21.17 Å" in capsys.readouterr().out
    assert main([*run, "--dispersion", "d3bj", "--functional", "nope"]) == 2
    assert capsys.readouterr().err.strip().endswith("s-dftd3 has no d3bj parameters for the functional 'nope'")


def test_training_subtracts_d3_from_the_labels_and_the_model_adds_it_back(tmp_path, capsys):
    from ase.io import read, write

    from equinet.config import TrainConfig
    from ase.calculators.emt import EMT
    from equinet.training.data import prepare_data
    from equinet.training.run import _record_dispersion

    frames = []
    for seed in range(6):
        atoms = triclinic_alloy()
        atoms.rattle(0.05, seed=seed)
        atoms.calc = EMT()
        atoms.info["REF_energy"], atoms.arrays["REF_forces"] = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = None
        frames.append(atoms)
    write(tmp_path / "data.extxyz", frames)
    settings = {"damping": "d3zero", "functional": "pbe", "cutoff": 9.0, "cn_cutoff": 9.0, "three_body": True}
    config = TrainConfig.model_validate({
        "data": {"train": str(tmp_path / "data.extxyz"), "energy_key": "REF_energy", "forces_key": "REF_forces", "split": [4, 2, 0], "dispersion": settings},
        "model": {"name": "mace", "cutoff": 4.0},
    })  # fmt: skip
    sets = prepare_data(config, 4.0, torch.float64)
    d3 = D3Dispersion(**settings)
    raw = read(tmp_path / "data.extxyz", ":")
    corrected = {round(float(graph.energy), 9): graph for graph in [*sets["train"], *sets["valid"]]}
    assert len(corrected) == 6
    for atoms in raw:
        dispersion = d3(atoms)
        graph = corrected[round(atoms.info["REF_energy"] - dispersion["energy"], 9)]
        np.testing.assert_allclose(graph.forces.numpy(), atoms.arrays["REF_forces"] - dispersion["forces"], atol=1e-12)

    model = small_model("mace")
    _record_dispersion(model, config)
    save_model(model, tmp_path / "model.pt")
    atoms = raw[0]
    with_d3, without = Calculator(tmp_path / "model.pt"), Calculator(tmp_path / "model.pt", dispersion=False)
    assert with_d3.dispersion.settings() == settings
    assert with_d3.get_potential_energy(atoms) == pytest.approx(without.get_potential_energy(atoms) + d3(atoms)["energy"], rel=1e-12)
    out = tmp_path / "eval"
    assert main(["evaluate", str(tmp_path / "model.pt"), str(tmp_path / "data.extxyz"), "--energy-key", "REF_energy", "--forces-key", "REF_forces", "--output", str(out)]) == 0
    assert "subtracted from the labels, as in the model's training" in capsys.readouterr().out
