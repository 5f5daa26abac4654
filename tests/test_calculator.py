"""equinet.Calculator under ASE: direct model agreement, NVE energy conservation, cell
relaxation, pymatgen input, and the `equinet md` command. (Finite-difference forces and
stress through the calculator are in test_potentials.py.)"""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.filters import FrechetCellFilter
from ase.io import read
from ase.optimize import FIRE
from small_models import small_model, triclinic_alloy
from torch_geometric.data import Batch

from equinet import Calculator, save_model
from equinet.cli import main
from equinet.datasets import atoms_to_graph
from equinet.md import run_md
from equinet.potentials import build_model

STATISTICS = {"elements": [1, 6, 8, 28, 29], "atomic_energies": {1: -13.6, 6: -1030.0, 8: -2040.0, 28: -4.1, 29: -3.7},
              "avg_num_neighbors": 12.0, "force_rms": 0.7}


@pytest.fixture(scope="module")
def model():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    config = {"name": "mace", "dtype": "float64", "cutoff": 4.0, "hidden_irreps": "4x0e+4x1o", "max_ell": 2,
              "correlation": 2, "radial_hidden": [8]}
    yield build_model(config, STATISTICS).eval()
    torch.set_default_dtype(previous)


def _alloy(repeat=(2, 2, 2)):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * repeat
    atoms.symbols[::3] = "Ni"
    return atoms


def test_results_equal_the_model_output(model):
    atoms = _alloy((1, 1, 2))
    atoms.rattle(0.05, seed=0)
    atoms.calc = Calculator(model)
    out = model(Batch.from_data_list([atoms_to_graph(atoms, model.cutoff, dtype=torch.float64)]), stress=True)
    assert atoms.get_potential_energy() == pytest.approx(float(out["energy"].detach()[0]), abs=1e-12)
    assert atoms.get_potential_energy() == atoms.calc.get_property("free_energy")
    np.testing.assert_allclose(atoms.get_forces(), out["forces"].detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(atoms.get_potential_energies(), out["node_energy"].detach().numpy(), atol=1e-12)
    s = out["stress"].detach().numpy()[0]
    np.testing.assert_allclose(atoms.get_stress(), [s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]], atol=1e-12)


def test_molecules_have_no_stress(model):
    atoms = molecule("H2O")
    atoms.calc = Calculator(model)
    assert np.isfinite(atoms.get_forces()).all()
    with pytest.raises(PropertyNotImplementedError, match="stress"):
        atoms.get_stress()


def test_nve_conserves_energy(model):
    atoms = _alloy()  # 32 atoms
    atoms.calc = Calculator(model)
    result = run_md(atoms, "nve", temperature_K=300, timestep_fs=1.0, steps=500, interval=25, progress=False)
    assert len(result.time_fs) == 21 and result.time_fs[-1] == 500.0
    assert result.temperature.min() > 50, "the atoms must move"
    assert abs(result.drift_per_atom) < 1e-4
    assert np.abs(result.total - result.total[0]).max() / len(atoms) < 1e-4


def test_the_thermostat_and_the_barostat_reach_their_targets(tmp_path):
    """Langevin NVT holds the target temperature, and Berendsen NPT takes a stretched cell to
    the target pressure, given in bar. On EMT copper: the ensembles, not a model, are tested."""
    from ase import units
    from ase.calculators.emt import EMT
    from ase.io import Trajectory

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)  # 32 atoms
    atoms.calc = EMT()
    nvt = run_md(atoms, "nvt", temperature_K=500, timestep_fs=2.0, steps=1500, interval=10, progress=False)
    assert nvt.temperature[50:].mean() == pytest.approx(500, rel=0.1)  # after 1 ps: 10 thermostat times

    stretched = bulk("Cu", "fcc", a=3.61 * 1.02, cubic=True) * (2, 2, 2)
    stretched.calc = EMT()
    start_volume = stretched.get_volume()
    run_md(stretched, "npt", temperature_K=300, pressure_bar=1e4, timestep_fs=2.0, steps=400, interval=10,
           trajectory=tmp_path / "npt.traj", progress=False)  # fmt: skip
    frames = Trajectory(str(tmp_path / "npt.traj"))[20:]  # the second half
    # The pressure the barostat holds: the virial's and the ideal gas's, 2 E_kin / (3 V).
    pressures = [(-np.trace(f.get_stress(voigt=False)) / 3 + 2 * f.get_kinetic_energy() / (3 * f.get_volume())) / units.GPa for f in frames]
    assert np.mean(pressures) == pytest.approx(1.0, abs=0.3)  # 1e4 bar = 1 GPa
    assert frames[-1].get_volume() < 0.95 * start_volume  # most of the 6% stretch is gone


def test_cell_relaxation_converges(model):
    atoms = _alloy((2, 1, 1))
    atoms.set_cell(atoms.cell.array @ np.diag([1.05, 0.97, 1.02]), scale_atoms=True)
    atoms.rattle(0.05, seed=1)
    atoms.calc = Calculator(model)
    start_cell = atoms.cell.array.copy()
    optimizer = FIRE(FrechetCellFilter(atoms), logfile=None)
    assert optimizer.run(fmax=0.005, steps=500)
    assert np.abs(atoms.get_forces()).max() < 0.005
    # FrechetCellFilter's cell "forces" are the virial divided by the number of atoms.
    assert np.abs(atoms.get_stress()).max() * atoms.get_volume() < 0.005 * len(atoms) * 1.5
    assert not np.allclose(atoms.cell.array, start_cell, atol=1e-3)


def test_pymatgen_input_gives_the_ase_numbers(model):
    from pymatgen.core import Molecule
    from pymatgen.io.ase import AseAtomsAdaptor

    calc = Calculator(model)
    atoms = _alloy((1, 1, 2))
    atoms.rattle(0.05, seed=2)
    atoms.calc = calc
    structure = AseAtomsAdaptor.get_structure(atoms)
    from_pymatgen = calc.atoms_for(structure)
    assert from_pymatgen.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
    np.testing.assert_allclose(from_pymatgen.get_forces(), atoms.get_forces(), atol=1e-10)
    np.testing.assert_allclose(from_pymatgen.get_stress(), atoms.get_stress(), atol=1e-10)
    water = molecule("H2O")
    water.calc = calc
    assert calc.atoms_for(Molecule(["O", "H", "H"], water.positions)).get_potential_energy() == pytest.approx(
        water.get_potential_energy(), abs=1e-10
    )


def test_md_command_writes_trajectory_log_and_plot(model, tmp_path, capsys):
    save_model(model, tmp_path / "model.pt")
    _alloy((1, 1, 1)).write(tmp_path / "start.extxyz")
    for ensemble in ("nve", "nvt", "npt"):
        output = tmp_path / ensemble / "md.extxyz"
        argv = ["md", str(tmp_path / "model.pt"), str(tmp_path / "start.extxyz"), "--ensemble", ensemble,
                "--steps", "20", "--interval", "5", "--timestep", "0.5", "--output", str(output)]
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert f"20 steps of {ensemble} MD (4 atoms" in out and "steps/s" in out and "drift" in out
        assert len(read(output, index=":")) == 5
        assert len((tmp_path / ensemble / "md.log").read_text().splitlines()) == 6
        assert (tmp_path / ensemble / "md.png").stat().st_size > 1000


def test_md_command_errors_are_one_line(model, tmp_path, capsys):
    save_model(model, tmp_path / "model.pt")
    assert main(["md", str(tmp_path / "model.pt"), str(tmp_path / "none.xyz")]) == 2
    assert "none.xyz: file not found" in capsys.readouterr().err
    bulk("Au", "fcc", a=4.1).write(tmp_path / "gold.extxyz")
    output = ["--output", str(tmp_path / "md.extxyz")]
    assert main(["md", str(tmp_path / "model.pt"), str(tmp_path / "gold.extxyz"), "--steps", "2", *output]) == 2
    assert "element Au is not one the model was built for (H, C, O, Ni, Cu)" in capsys.readouterr().err
    molecule("H2O").write(tmp_path / "water.xyz")
    assert main(["md", str(tmp_path / "model.pt"), str(tmp_path / "water.xyz"), "--ensemble", "npt", "--steps", "2", *output]) == 2
    assert "npt needs a periodic cell" in capsys.readouterr().err
    assert main(["md", str(tmp_path / "missing.pt"), str(tmp_path / "water.xyz"), *output]) == 2
    assert "missing.pt: model file not found" in capsys.readouterr().err


def test_a_committee_predicts_the_mean_and_its_spread():
    members = [small_model("mace"), small_model("mace")]
    with torch.no_grad():
        for parameter in members[1].parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    atoms = triclinic_alloy()
    singles = []
    for member in members:
        atoms.calc = Calculator(member)
        singles.append((atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()))
    atoms.calc = Calculator(members)
    assert atoms.get_potential_energy() == pytest.approx(np.mean([e for e, _, _ in singles]), rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), np.mean([f for _, f, _ in singles], axis=0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(atoms.get_stress(), np.mean([s for _, _, s in singles], axis=0), rtol=1e-12, atol=1e-14)
    results = atoms.calc.results
    np.testing.assert_allclose(results["energies_committee"], [e for e, _, _ in singles], rtol=1e-12)
    assert results["energy_std"] == pytest.approx(abs(singles[0][0] - singles[1][0]) / 2, rel=1e-10)
    expected_std = np.linalg.norm(np.std([f for _, f, _ in singles], axis=0), axis=1)
    np.testing.assert_allclose(results["forces_std"], expected_std, rtol=1e-10)
    assert (results["forces_std"] > 0).all()

    atoms.calc = Calculator([members[0], members[0]])  # identical members: no spread
    atoms.get_potential_energy()
    assert atoms.calc.results["energy_std"] == 0 and not atoms.calc.results["forces_std"].any()


def test_committee_members_must_share_elements_and_cutoff():
    with pytest.raises(ValueError, match="committee members differ: .* a committee needs the same elements and cutoff"):
        Calculator([small_model("mace"), small_model("mace", cutoff=3.5)])
    with pytest.raises(ValueError, match="an empty committee"):
        Calculator([])


def test_md_with_a_committee_logs_its_spread_and_stops_where_it_grows(tmp_path, capsys):
    from ase.io import write

    members = [small_model("mace"), small_model("mace")]
    with torch.no_grad():
        for parameter in members[1].parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    for index, member in enumerate(members):
        save_model(member, tmp_path / f"m{index}.pt")
    write(tmp_path / "start.extxyz", triclinic_alloy())
    models = [str(tmp_path / "m0.pt"), str(tmp_path / "m1.pt")]
    argv = ["md", *models, str(tmp_path / "start.extxyz"), "--steps", "20", "--interval", "5", "--output", str(tmp_path / "md.extxyz")]
    assert main(argv) == 0
    log = np.loadtxt(tmp_path / "md.log", skiprows=1)
    assert log.shape == (5, 6) and (log[:, 5] > 0).all()
    assert "committee of 2: largest per-atom force std" in capsys.readouterr().out
    threshold = float(log[0, 5]) / 2  # passed at the first record
    assert main([*argv, "--max-force-std", str(threshold)]) == 1
    assert "stopped at 0 fs: the force std" in capsys.readouterr().out
    between = float(np.median(log[:, 5]))  # some records above, some below
    assert main([*argv, "--max-force-std", str(between), "--on-uncertain", "save"]) == 0
    saved = read(tmp_path / "md_uncertain.extxyz", ":")
    assert len(saved) == int((log[:, 5] > between).sum()) > 0
    assert main([*argv, "--on-uncertain", "save"]) == 2
    assert "give --max-force-std too" in capsys.readouterr().err
    assert main(["md", models[0], str(tmp_path / "start.extxyz"), "--max-force-std", "0.1"]) == 2
    assert "two or more models (a committee)" in capsys.readouterr().err
