"""Second derivatives by autograd (equinet.derivatives) against central finite differences
of the same model, in float64."""

import sys

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import write
from ase.optimize import BFGS
from small_models import ethanol, small_model, triclinic_alloy

from equinet import Calculator, save_model
from equinet.cli import main
from equinet.derivatives import EV_PER_A3_IN_GPA, VOIGT, elastic_tensor, gamma_frequencies, hessian


def _strained(atoms, strain: np.ndarray):
    strained = atoms.copy()
    strained.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    return strained


def _voigt_strain(index: int, size: float) -> np.ndarray:
    """The symmetric strain of Voigt component ``index`` (engineering shear)."""
    i, j = VOIGT[index]
    strain = np.zeros((3, 3))
    strain[i, j] += size if i == j else size / 2
    strain[j, i] += 0 if i == j else size / 2
    return strain


@pytest.mark.parametrize("variant", ["mace", "tensornet"])
@pytest.mark.parametrize("structure", [triclinic_alloy, ethanol], ids=["alloy", "molecule"])
def test_the_hessian_is_the_derivative_of_the_forces(variant, structure):
    model, atoms = small_model(variant), structure()
    calculator = Calculator(model)
    matrix = hessian(model, atoms)
    step, expected = 1e-5, np.zeros_like(matrix)
    for row in range(3 * len(atoms)):
        forces = []
        for sign in (1, -1):
            displaced = atoms.copy()
            displaced.positions[row // 3, row % 3] += sign * step
            forces.append(calculator.get_forces(displaced).reshape(-1))
        expected[row] = -(forces[0] - forces[1]) / (2 * step)
    np.testing.assert_allclose(matrix, expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    np.testing.assert_array_equal(matrix, matrix.T)
    atoms.calc = calculator  # the calculator's property, kept with the other results
    np.testing.assert_array_equal(calculator.get_hessian(atoms), matrix)
    np.testing.assert_array_equal(calculator.results["hessian"], matrix)
    assert np.isfinite(calculator.results["forces"]).all()


def test_the_clamped_ion_elastic_tensor_is_the_second_strain_derivative_of_the_energy():
    model, atoms = small_model("mace"), triclinic_alloy()
    calculator = Calculator(model)
    tensor = elastic_tensor(model, atoms, relaxed_ions=False)
    step, volume = 1e-4, atoms.get_volume()
    expected = np.zeros((6, 6))
    for a in range(6):
        for b in range(6):
            energies = [
                calculator.get_potential_energy(_strained(atoms, _voigt_strain(a, sa * step) + _voigt_strain(b, sb * step)))
                for sa, sb in ((1, 1), (1, -1), (-1, 1), (-1, -1))
            ]
            expected[a, b] = (energies[0] - energies[1] - energies[2] + energies[3]) / (4 * step**2) / volume * EV_PER_A3_IN_GPA
    np.testing.assert_allclose(tensor, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def _relaxed_energy(atoms, calculator) -> float:
    relaxed = atoms.copy()
    relaxed.calc = calculator
    BFGS(relaxed, logfile=None).run(fmax=1e-7, steps=500)
    return relaxed.get_potential_energy()


def test_the_relaxed_ion_correction_matches_relaxing_the_atoms_under_strain():
    """C_11 and C_44 of a two-atom cell whose atoms relax under strain (by BFGS, per strain)."""
    model, atoms = small_model("mace"), triclinic_alloy()
    calculator = Calculator(model)
    atoms.calc = calculator
    BFGS(atoms, logfile=None).run(fmax=1e-8, steps=500)
    tensor, clamped = elastic_tensor(model, atoms), elastic_tensor(model, atoms, relaxed_ions=False)
    step, volume = 3e-4, atoms.get_volume()
    e0 = _relaxed_energy(atoms, calculator)
    for index in (0, 3):
        plus, minus = (_relaxed_energy(_strained(atoms, _voigt_strain(index, s * step)), calculator) for s in (1, -1))
        expected = (plus - 2 * e0 + minus) / step**2 / volume * EV_PER_A3_IN_GPA
        assert tensor[index, index] == pytest.approx(expected, rel=1e-4)
        assert tensor[index, index] < clamped[index, index]  # relaxing softens


def test_an_fcc_crystal_has_a_cubic_elastic_tensor_and_three_acoustic_modes():
    model = small_model("mace")
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.symbols[0] = "Ni"  # L1_2 Cu3Ni: still cubic
    tensor = elastic_tensor(model, atoms)
    scale = np.abs(tensor).max()
    for group in ([(0, 0), (1, 1), (2, 2)], [(0, 1), (0, 2), (1, 2)], [(3, 3), (4, 4), (5, 5)]):
        values = [tensor[i, j] for i, j in group]
        assert np.ptp(values) < 1e-8 * scale, values
    off = [tensor[i, j] for i in range(6) for j in range(6) if (i < 3) != (j < 3) or (i >= 3 and j >= 3 and i != j)]
    assert np.abs(off).max() < 1e-8 * scale
    np.testing.assert_allclose(tensor, tensor.T, atol=1e-10 * scale)
    frequencies = gamma_frequencies(hessian(model, atoms), atoms.get_masses())
    assert np.abs(frequencies[np.argsort(np.abs(frequencies))[:3]]).max() < 1e-4  # THz: rigid translations


def test_the_phonons_and_elastic_commands_print_the_calculators_numbers(tmp_path, capsys):
    model = small_model("mace")
    save_model(model, tmp_path / "model.pt")
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    write(tmp_path / "cu.extxyz", atoms)
    assert main(["phonons", str(tmp_path / "model.pt"), str(tmp_path / "cu.extxyz")]) == 0
    printed = [float(line.split()[1]) for line in capsys.readouterr().out.splitlines() if line.split()[:1] and line.split()[0].isdigit()]
    np.testing.assert_allclose(printed, gamma_frequencies(hessian(model, atoms), atoms.get_masses()), atol=1e-4)
    assert main(["elastic", str(tmp_path / "model.pt"), str(tmp_path / "cu.extxyz")]) == 0
    rows = capsys.readouterr().out.splitlines()[1:7]
    np.testing.assert_allclose([[float(v) for v in row.split()] for row in rows], elastic_tensor(model, atoms), atol=0.01)
    write(tmp_path / "molecule.extxyz", ethanol())
    assert main(["elastic", str(tmp_path / "model.pt"), str(tmp_path / "molecule.extxyz")]) == 2
    assert "the elastic tensor needs a periodic cell" in capsys.readouterr().err


def test_phonopy_bands_from_the_hessian_equal_phonopy_s_own_finite_differences(tmp_path, capsys):
    """Force constants from the Hessian (autograd) against phonopy's displaced supercells
    (central differences of the calculator's forces): the same frequencies on q-points."""
    pytest.importorskip("phonopy")
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    from equinet.phonon_bands import phonopy_from_hessian

    model = small_model("mace")
    calculator = Calculator(model)
    cell = bulk("Cu", "fcc", a=3.6)  # primitive, one atom
    ours = phonopy_from_hessian(calculator, cell, (2, 2, 2))
    unit = PhonopyAtoms(symbols=["Cu"], cell=cell.cell.array, scaled_positions=cell.get_scaled_positions())
    theirs = Phonopy(unit, supercell_matrix=np.diag([2, 2, 2]))
    theirs.generate_displacements(distance=1e-3, is_plusminus=True)
    forces = []
    for displaced in theirs.supercells_with_displacements:
        atoms = Atoms(displaced.symbols, cell=displaced.cell, scaled_positions=displaced.scaled_positions, pbc=True)
        atoms.calc = calculator
        forces.append(atoms.get_forces())
    theirs.forces = forces
    theirs.produce_force_constants()
    q_points = [[0.0, 0.0, 0.0], [0.5, 0.0, 0.5], [0.5, 0.5, 0.5], [0.25, 0.1, 0.0]]
    expected = np.array([theirs.get_frequencies(q) for q in q_points])
    got = np.array([ours.get_frequencies(q) for q in q_points])
    assert np.abs(expected).max() > 0.5  # THz: a band structure worth comparing
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max())

    save_model(model, tmp_path / "model.pt")
    write(tmp_path / "cu.extxyz", cell)
    argv = ["phonons", str(tmp_path / "model.pt"), str(tmp_path / "cu.extxyz"), "--band-structure", str(tmp_path / "bands.png")]
    assert main(argv) == 0
    assert "band structure (2x2x2 supercell, 8 atoms, force constants from the Hessian)" in capsys.readouterr().out
    assert (tmp_path / "bands.png").stat().st_size > 10_000


# Where phonopy or seekpath is missing is where these messages matter: no importorskip.
@pytest.mark.parametrize(("missing", "message"), [
    ("phonopy", "phonon band structures need phonopy: pip install 'equinet[phonons]' (phonopy and seekpath)"),
    ("seekpath", "the band path comes from seekpath: pip install 'equinet[phonons]' (phonopy and seekpath)"),
])  # fmt: skip
def test_band_structures_without_phonopy_or_seekpath_are_one_line(tmp_path, capsys, monkeypatch, missing, message):
    if missing == "seekpath":
        pytest.importorskip("phonopy")
    monkeypatch.setitem(sys.modules, missing, None)  # `import phonopy` raises ImportError
    save_model(small_model("mace"), tmp_path / "model.pt")
    write(tmp_path / "cu.extxyz", bulk("Cu", "fcc", a=3.6))
    argv = ["phonons", str(tmp_path / "model.pt"), str(tmp_path / "cu.extxyz"), "--band-structure", str(tmp_path / "bands.png")]
    assert main([*argv, "--supercell", "1", "1", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.strip().endswith(message), err
    assert not (tmp_path / "bands.png").exists()
