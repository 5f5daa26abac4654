import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from torch_geometric.loader import DataLoader

from equinet.datasets import (
    H5Structures,
    compute_statistics,
    from_pymatgen,
    load_dataset,
    read_atomic_energies,
    read_structures,
    split_dataset,
    write_h5,
)
from equinet.datasets.labels import ENERGY_UNITS


def _emt_frames(count=6, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(count):
        atoms = bulk("Cu" if k % 2 else "Au", "fcc", a=3.8, cubic=True)
        atoms.symbols[rng.integers(4)] = "Ni"
        atoms.rattle(0.1, seed=k)
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(
            atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces(), stress=atoms.get_stress()
        )
        frames.append(atoms)
    return frames


def test_extxyz_labels_as_calculator_results_or_ref_keys_read_the_same(tmp_path):
    frames = _emt_frames()
    write(tmp_path / "calc.extxyz", frames)
    ref_frames = []
    for atoms in frames:
        plain = Atoms(atoms)
        plain.info["REF_energy"] = atoms.get_potential_energy()
        plain.arrays["REF_forces"] = atoms.get_forces()
        plain.info["REF_stress"] = atoms.get_stress(voigt=False)  # 3x3 form
        ref_frames.append(plain)
    write(tmp_path / "ref.extxyz", ref_frames)
    for a, b in zip(read_structures(tmp_path / "calc.extxyz"), read_structures(tmp_path / "ref.extxyz")):
        assert a[1].energy == pytest.approx(b[1].energy, abs=1e-8)
        np.testing.assert_allclose(a[1].forces, b[1].forces, atol=1e-8)
        np.testing.assert_allclose(a[1].stress, b[1].stress, atol=1e-8)
    np.testing.assert_allclose(b[1].stress, frames[-1].get_stress(voigt=False), atol=1e-8)


def test_custom_keys_and_other_ase_formats(tmp_path):
    frames = []
    for atoms in _emt_frames(3):
        plain = Atoms(atoms)
        plain.info["dft_energy"] = atoms.get_potential_energy()
        plain.arrays["dft_forces"] = atoms.get_forces()
        frames.append(plain)
    write(tmp_path / "custom.extxyz", frames)
    structures = read_structures(tmp_path / "custom.extxyz", keys={"energy": "dft_energy", "forces": "dft_forces"})
    assert structures[0][1].energy == pytest.approx(frames[0].info["dft_energy"])
    emt = _emt_frames(3)
    for suffix in ("traj", "db"):
        write(tmp_path / f"frames.{suffix}", emt)
        structures = read_structures(tmp_path / f"frames.{suffix}")
        assert len(structures) == len(emt)
        for (atoms, labels), expected in zip(structures, emt):  # the labels EMT gave, in ASE's units
            np.testing.assert_allclose(atoms.positions, expected.positions, atol=1e-12)
            assert labels.energy == pytest.approx(expected.get_potential_energy(), abs=1e-10)
            np.testing.assert_allclose(labels.forces, expected.get_forces(), atol=1e-10)
            np.testing.assert_allclose(labels.stress, expected.get_stress(voigt=False), atol=1e-10)


def test_rmd17_npz_in_kcal_per_mol(tmp_path):
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(4, 3, 3)) + np.array([0.0, 1.5, 3.0])[None, :, None]
    energies, forces = rng.normal(size=4) * 100, rng.normal(size=(4, 3, 3))
    np.savez(tmp_path / "mol.npz", nuclear_charges=np.array([8, 1, 1]), coords=coords, energies=energies, forces=forces)
    structures = read_structures(tmp_path / "mol.npz", energy_unit="kcal/mol")
    kcal = ENERGY_UNITS["kcal/mol"]
    assert kcal == pytest.approx(0.0433641, rel=1e-5)
    assert structures[2][1].energy == pytest.approx(energies[2] * kcal)
    np.testing.assert_allclose(structures[2][1].forces, forces[2] * kcal)
    np.testing.assert_allclose(structures[2][0].positions, coords[2])
    assert list(structures[0][0].numbers) == [8, 1, 1] and not structures[0][0].pbc.any()


def test_pymatgen_structure_and_molecule_with_labels():
    from pymatgen.core import Lattice, Molecule, Structure

    structure = Structure(
        Lattice.cubic(3.6), ["Cu", "Ni"], [[0, 0, 0], [0.5, 0.5, 0.5]],
        site_properties={"forces": [[0.1, 0, 0], [-0.1, 0, 0]]}, properties={"energy": -7.0},
    )
    atoms, labels = from_pymatgen(structure, stress=np.eye(3) * 0.01)
    assert atoms.pbc.all() and labels.energy == -7.0 and labels.stress[0, 0] == 0.01
    np.testing.assert_allclose(labels.forces[0], [0.1, 0, 0])
    atoms, labels = from_pymatgen(Molecule(["O", "H", "H"], [[0, 0, 0], [0, 0.76, 0.59], [0, -0.76, 0.59]]), energy=-14.2)
    assert not atoms.pbc.any() and labels.energy == -14.2 and labels.forces is None


def test_h5_store_reads_back_identical_and_serves_graphs(tmp_path):
    frames = _emt_frames(7)
    frames.append(Atoms("H2O", positions=[[0, 0, 0], [0, 0.76, 0.59], [0, -0.76, 0.59]]))  # no cell, no stress
    frames[-1].calc = SinglePointCalculator(frames[-1], energy=-1.0, forces=np.zeros((3, 3)))
    write(tmp_path / "mixed.extxyz", frames)
    original = read_structures(tmp_path / "mixed.extxyz")
    assert write_h5(tmp_path / "mixed.h5", iter(original), chunk_frames=3) == 8
    store = H5Structures(tmp_path / "mixed.h5")
    assert len(store) == 8
    for (atoms, labels), (atoms_back, labels_back) in zip(original, (store[i] for i in range(8))):
        assert (atoms.numbers == atoms_back.numbers).all() and (atoms.pbc == atoms_back.pbc).all()
        np.testing.assert_array_equal(atoms.positions, atoms_back.positions)
        np.testing.assert_array_equal(atoms.cell.array, atoms_back.cell.array)
        for name in ("energy", "forces", "stress", "node_energy"):
            a, b = getattr(labels, name), getattr(labels_back, name)
            assert (a is None) == (b is None), name
            if a is not None:
                np.testing.assert_array_equal(a, b)
    in_memory = load_dataset(tmp_path / "mixed.extxyz", cutoff=4.0)
    streamed = load_dataset(tmp_path / "mixed.h5", cutoff=4.0)
    # Two worker processes share the store; the batches equal the in-memory ones.
    loaders = [DataLoader(in_memory, batch_size=3), DataLoader(streamed, batch_size=3, num_workers=2)]
    for a, b in zip(*loaders):
        for key in ("pos", "z", "cell", "edge_index", "edge_shift", "energy", "forces"):
            torch.testing.assert_close(a[key], b[key])


def test_split_by_fractions_and_counts_is_disjoint_and_seeded():
    data = list(range(100))
    train, val, test = split_dataset(data, [0.8, 0.1, 0.1], seed=1)
    assert (len(train), len(val), len(test)) == (80, 10, 10)
    assert sorted(train.indices + val.indices + test.indices) == data
    assert split_dataset(data, [0.8, 0.1, 0.1], seed=1)[0].indices == train.indices
    assert split_dataset(data, [0.8, 0.1, 0.1], seed=2)[0].indices != train.indices
    train, val = split_dataset(data, [95, 5])
    assert (len(train), len(val)) == (95, 5) and not set(train.indices) & set(val.indices)


def test_statistics_recover_reference_energies_and_neighbors(tmp_path):
    rng = np.random.default_rng(0)
    reference = {29: -3.5, 28: -5.25}
    frames = []
    for k in range(12):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (1, 1, 2)
        atoms.symbols[rng.choice(8, size=k % 5, replace=False)] = "Ni"
        energy = sum(reference[z] for z in atoms.numbers)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=np.full((8, 3), 0.5))
        frames.append(atoms)
    write(tmp_path / "frames.extxyz", frames)
    graphs = load_dataset(tmp_path / "frames.extxyz", cutoff=3.0)
    stats = compute_statistics(graphs)
    assert stats["elements"] == [28, 29]
    for z, e in reference.items():
        assert stats["atomic_energies"][z] == pytest.approx(e)
    assert stats["avg_num_neighbors"] == pytest.approx(12.0)  # fcc first shell only
    assert stats["force_rms"] == pytest.approx(0.5)
    assert stats["energy_per_atom_mean"] == pytest.approx(0.0, abs=1e-12)

    isolated = [Atoms("Cu"), Atoms("Ni")]
    for atoms, energy in zip(isolated, (-3.0, -5.0)):
        atoms.calc = SinglePointCalculator(atoms, energy=energy)
    write(tmp_path / "isolated.extxyz", isolated)
    atomic_energies = read_atomic_energies(tmp_path / "isolated.extxyz")
    assert atomic_energies == {29: -3.0, 28: -5.0}
    stats = compute_statistics(graphs, atomic_energies)
    assert stats["atomic_energies"] == {28: -5.0, 29: -3.0}
    # Residual per atom: (n_Cu * (-0.5) + n_Ni * (-0.25)) / 8 with n_Ni = k % 5.
    residuals = [((8 - k % 5) * -0.5 + (k % 5) * -0.25) / 8 for k in range(12)]
    assert stats["energy_per_atom_mean"] == pytest.approx(np.mean(residuals))
    assert stats["energy_per_atom_std"] == pytest.approx(np.std(residuals))
