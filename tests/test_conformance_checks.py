"""The conformance checks pass on a correct potential (ASE's EMT) and operators, and
fail, naming the error, on deliberately broken ones: a check that cannot fail is useless."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT

from equinet import testing


def _triclinic_copper():
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    atoms.set_cell(atoms.cell.array + np.array([[0.0, 0.2, 0.1], [0.3, 0.0, -0.1], [0.1, 0.2, 0.0]]), scale_atoms=True)
    atoms.rattle(0.05, seed=1)
    atoms.calc = EMT()
    return atoms


def _cluster():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.02, seed=2)
    atoms.calc = EMT()
    return atoms


class _Defective(Calculator):
    """EMT with one physical defect switched on."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, defect: str):
        super().__init__()
        self.defect = defect
        self.emt = EMT()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms.copy()
        atoms.calc = self.emt
        energy, forces = atoms.get_potential_energy(), atoms.get_forces().copy()
        stress = atoms.get_stress() if atoms.pbc.all() else np.zeros(6)
        if self.defect == "forces":
            forces *= 1.01
        elif self.defect == "stress":
            stress = stress * 1.01
        elif self.defect == "field":  # a uniform field along z: consistent forces, no symmetry
            energy += 0.1 * atoms.positions[:, 2].sum()
            forces[:, 2] -= 0.1
        elif self.defect == "first_atom":  # depends on atom order, forces consistent
            energy += 0.1 * atoms.positions[0] @ atoms.positions[0]
            forces[0] -= 0.2 * atoms.positions[0]
        elif self.defect == "size":  # energy not extensive
            energy += 0.01 * len(atoms) ** 2
        self.results = {"energy": energy, "free_energy": energy, "forces": forces, "stress": stress}


def _with(atoms, calc):
    atoms.calc = calc
    return atoms


def test_checks_pass_on_a_correct_periodic_potential():
    atoms = _triclinic_copper()
    assert testing.assert_forces_match_finite_differences(atoms, atol=1e-5) < 1e-5
    assert testing.assert_stress_matches_finite_strain(atoms) < 1e-5
    assert testing.assert_rotation_equivariant(atoms, atol=1e-8) < 1e-8
    assert testing.assert_translation_invariant(atoms, atol=1e-8) < 1e-8
    assert testing.assert_permutation_invariant(atoms, atol=1e-8) < 1e-8
    assert testing.assert_supercell_extensive(atoms, (2, 2, 1), rtol=1e-8) < 1e-8
    assert testing.assert_calculators_agree(atoms, EMT(), rtol=1e-12) == 0


def test_checks_pass_on_a_correct_molecular_potential():
    atoms = _cluster()
    testing.assert_forces_match_finite_differences(atoms, atol=1e-5)
    testing.assert_rotation_equivariant(atoms, atol=1e-8)
    testing.assert_translation_invariant(atoms, atol=1e-8)
    testing.assert_permutation_invariant(atoms, atol=1e-8)


@pytest.mark.parametrize(
    "defect, check, message",
    [
        ("forces", testing.assert_forces_match_finite_differences, "forces vs -dE/dx"),
        ("stress", testing.assert_stress_matches_finite_strain, "stress vs finite strain"),
        ("field", testing.assert_rotation_equivariant, "rotation equivariance"),
        ("field", testing.assert_translation_invariant, "translation invariance"),
        ("first_atom", testing.assert_permutation_invariant, "permutation invariance"),
        ("size", testing.assert_supercell_extensive, "extensivity"),
    ],
)
def test_checks_fail_on_broken_potentials(defect, check, message):
    atoms = _with(_triclinic_copper(), _Defective(defect))
    with pytest.raises(AssertionError, match=rf"{message}.*error \d\.\d+e[-+]\d+ exceeds tolerance"):
        check(atoms)


def test_defects_that_keep_forces_consistent_pass_finite_differences():
    # The symmetry defects above are caught by the symmetry checks, not by accident.
    for defect in ("field", "first_atom", "size"):
        testing.assert_forces_match_finite_differences(_with(_triclinic_copper(), _Defective(defect)), atol=1e-5)


def test_calculators_agree_detects_a_difference():
    atoms = _triclinic_copper()
    with pytest.raises(AssertionError, match="calculator agreement"):
        testing.assert_calculators_agree(atoms, _Defective("forces"))


def test_stress_checks_need_a_periodic_cell():
    with pytest.raises(ValueError, match="periodic cell"):
        testing.assert_stress_matches_finite_strain(_cluster())


def test_equivariance_check_catches_anisotropy_and_wrong_parity(float64):
    a, b = torch.randn(10, 3), torch.randn(10, 3)
    testing.assert_equivariant(torch.linalg.cross, [a, b], ["1o", "1o"], "1e")
    with pytest.raises(AssertionError, match="equivariance"):
        testing.assert_equivariant(torch.linalg.cross, [a, b], ["1o", "1o"], "1o")  # fails only under reflection
    with pytest.raises(AssertionError, match="equivariance"):
        testing.assert_equivariant(lambda x: x * torch.tensor([1.0, 2.0, 3.0]), [a], ["1o"], "1o")


def test_random_orthogonal_matrix_is_orthogonal():
    for reflection, det in ((False, 1.0), (True, -1.0)):
        q = testing.random_orthogonal_matrix(reflection)
        torch.testing.assert_close(q @ q.T, torch.eye(3, dtype=torch.float64))
        assert torch.det(q).item() == pytest.approx(det)


def test_float32_check_catches_precision_loss():
    class Cancels(torch.nn.Module):
        def forward(self, x):
            return (x + 1e8) - 1e8

    x = torch.randn(10, dtype=torch.float64)
    with pytest.raises(AssertionError, match="float32 vs float64"):
        testing.assert_float32_matches_float64(Cancels(), [x])
    assert testing.assert_float32_matches_float64(torch.nn.Tanh(), [x]) < 1e-6
