"""Model files written by earlier equinet versions still load and give the same numbers."""

import json
from pathlib import Path

import numpy as np
from ase import Atoms

from equinet import Calculator

DATA = Path(__file__).parent / "data"


def test_a_model_file_from_before_the_backend_and_checkpoint_changes_gives_the_same_numbers():
    """``mace_model_v0.pt``: a float64 MACE written when the backend was a hyper-parameter
    (``conv_backend: e3nn`` in its config), with the energy, forces and stress it gave then."""
    reference = json.loads((DATA / "mace_model_v0.json").read_text())
    atoms = Atoms(reference["numbers"], positions=reference["positions"], cell=reference["cell"], pbc=True)
    atoms.calc = Calculator(DATA / "mace_model_v0.pt")
    assert abs(atoms.get_potential_energy() - reference["energy"]) <= 1e-12 * abs(reference["energy"])
    np.testing.assert_allclose(atoms.get_forces(), reference["forces"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(atoms.get_stress(), reference["stress"], rtol=1e-10, atol=1e-12)
