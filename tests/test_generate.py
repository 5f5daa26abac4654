"""The embedded default data sets: exact size, a mix of configurations, determinism and
labels that match a fresh evaluation of each structure."""

import sys

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.io import read, write

from equinet.cli import main
from equinet.datasets import read_structures
from equinet.datasets.generate import GENERATORS, METALS, generate_emt_alloys, generate_xtb_molecules

N_EMT = 40
N_XTB = 6


@pytest.fixture(scope="module")
def emt_frames():
    return generate_emt_alloys(N_EMT, seed=0, progress=False)


@pytest.fixture(scope="module")
def xtb_frames():
    pytest.importorskip("tblite")
    return generate_xtb_molecules(N_XTB, seed=0, progress=False)


def _assert_identical(frames, others, atol=0.0):
    """Same structures and labels; ``atol`` allows for multithreaded labellers (tblite's
    OpenMP reductions change the last bits of a force from run to run)."""
    assert len(frames) == len(others)
    for atoms, other in zip(frames, others):
        assert atoms.get_chemical_symbols() == other.get_chemical_symbols()
        np.testing.assert_allclose(atoms.positions, other.positions, rtol=0, atol=atol)
        np.testing.assert_array_equal(atoms.cell, other.cell)
        assert atoms.get_potential_energy() == pytest.approx(other.get_potential_energy(), rel=0, abs=atol)
        np.testing.assert_allclose(atoms.get_forces(), other.get_forces(), rtol=0, atol=atol)


def _assert_finite(frames):
    for atoms in frames:
        assert np.isfinite(atoms.get_potential_energy())
        assert np.isfinite(atoms.get_forces()).all()


def test_generators_are_registered_by_name():
    assert GENERATORS == {"emt-alloys": generate_emt_alloys, "xtb-molecules": generate_xtb_molecules}


def test_emt_alloys_has_exactly_n_frames_of_every_kind(emt_frames):
    assert len(emt_frames) == N_EMT
    kinds = {atoms.info["config_type"] for atoms in emt_frames}
    assert kinds == {"bulk", "alloy", "vacancy", "surface", "md_300K", "md_800K"}
    assert all(set(atoms.get_chemical_symbols()) <= set(METALS) for atoms in emt_frames)
    assert any(len(set(atoms.get_chemical_symbols())) == 2 for atoms in emt_frames)
    _assert_finite(emt_frames)


def test_emt_alloys_is_deterministic_for_a_seed(emt_frames):
    _assert_identical(emt_frames, generate_emt_alloys(N_EMT, seed=0, progress=False))
    other = generate_emt_alloys(N_EMT, seed=1, progress=False)
    assert any(
        len(a) != len(b) or not np.array_equal(a.positions, b.positions) for a, b in zip(emt_frames, other)
    )


def test_emt_alloys_cells_include_tiny_periodic_cells_and_slabs(emt_frames):
    periodic = [atoms for atoms in emt_frames if atoms.pbc.all()]
    assert any(atoms.cell.lengths().min() < 5.0 for atoms in periodic)
    assert any(len(atoms) == 1 for atoms in periodic)
    slabs = [atoms for atoms in emt_frames if tuple(atoms.pbc) == (True, True, False)]
    assert slabs and all(atoms.info["config_type"] == "surface" for atoms in slabs)
    assert len(periodic) + len(slabs) == N_EMT


def test_emt_alloys_has_stress_exactly_for_fully_periodic_frames(emt_frames):
    for atoms in emt_frames:
        assert ("stress" in atoms.calc.results) == bool(atoms.pbc.all())


def test_emt_alloys_labels_equal_a_fresh_emt_evaluation(emt_frames):
    kinds = {}
    for atoms in emt_frames:
        kinds.setdefault(atoms.info["config_type"], atoms)
    for frame in (kinds["alloy"], kinds["surface"], kinds["md_300K"]):
        atoms = frame.copy()
        atoms.calc = EMT()
        assert atoms.get_potential_energy() == pytest.approx(frame.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(atoms.get_forces(), frame.get_forces(), atol=1e-10)
        if atoms.pbc.all():
            np.testing.assert_allclose(atoms.get_stress(), frame.get_stress(), atol=1e-10)


def test_equinet_data_generate_writes_the_generator_s_frames(tmp_path):
    assert main(["data", "generate", "emt-alloys", str(tmp_path / "emt.h5"), "--n", "5", "--seed", "0"]) == 0
    written = read_structures(tmp_path / "emt.h5")
    assert len(written) == 5
    for (atoms, labels), frame in zip(written, generate_emt_alloys(5, seed=0, progress=False)):
        np.testing.assert_allclose(atoms.positions, frame.positions, atol=1e-12)
        assert labels.energy == pytest.approx(frame.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(labels.forces, frame.get_forces(), atol=1e-9)


def test_emt_alloys_survive_an_extxyz_round_trip(emt_frames, tmp_path):
    path = tmp_path / "emt.extxyz"
    write(path, emt_frames)
    back = read(path, index=":")
    assert len(back) == N_EMT
    for atoms, frame in zip(back, emt_frames):
        assert atoms.info["config_type"] == frame.info["config_type"]
        assert tuple(atoms.pbc) == tuple(frame.pbc)
        assert atoms.calc.results["energy"] == pytest.approx(frame.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(atoms.calc.results["forces"], frame.get_forces(), atol=1e-6)
        assert ("stress" in atoms.calc.results) == bool(frame.pbc.all())


def test_xtb_molecules_are_finite_deterministic_molecules(xtb_frames):
    assert len(xtb_frames) == N_XTB
    _assert_finite(xtb_frames)
    for atoms in xtb_frames:
        assert not atoms.pbc.any() and "stress" not in atoms.calc.results
        assert atoms.info["config_type"] == "md_molecule"
    _assert_identical(xtb_frames, generate_xtb_molecules(N_XTB, seed=0, progress=False), atol=1e-9)


def test_xtb_molecules_labels_equal_a_fresh_tblite_evaluation(xtb_frames):
    from tblite.ase import TBLite

    frame = xtb_frames[-1]
    atoms = frame.copy()
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    assert atoms.get_potential_energy() == pytest.approx(frame.get_potential_energy(), abs=1e-6)
    np.testing.assert_allclose(atoms.get_forces(), frame.get_forces(), atol=1e-5)
    np.testing.assert_allclose(atoms.get_dipole_moment(), frame.get_dipole_moment(), atol=1e-5)  # e·Å


def test_xtb_molecules_without_tblite_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "tblite.ase", None)
    with pytest.raises(ImportError, match=r"equinet\[xtb\]"):
        generate_xtb_molecules(1, progress=False)


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize("n", [0, -3, 2.5, "10", True])
def test_a_bad_n_is_refused(name, n):
    with pytest.raises(ValueError, match=r"\bn\b"):
        GENERATORS[name](n, progress=False)
