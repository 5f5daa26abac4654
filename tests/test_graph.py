import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.neighborlist import neighbor_list as ase_neighbor_list
from torch_geometric.data import Batch

from equinet.datasets import Labels, atoms_to_graph, neighbor_list

CUTOFF = 5.0


def _triclinic():
    atoms = bulk("Cu", "fcc", a=3.6)  # primitive cell: 2.5 Å vectors, far below the cutoff
    atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.1, 0.0], [0.0, 1.05, 0.2], [0.1, 0.0, 0.95]]), scale_atoms=True)
    return atoms


def _structures():
    cases = {
        "triclinic 1-atom cell (sees its own images)": _triclinic(),
        "supercell with two species": bulk("NaCl", "rocksalt", a=5.6) * (2, 1, 1),
        "slab, pbc T T F": fcc111("Pt", (2, 2, 3), vacuum=6.0),
        "molecule, no cell": molecule("CH3CH2OH"),
        "periodic along one axis only": Atoms("C2", positions=[[0, 0, 0], [0, 0, 1.4]], cell=[0, 0, 2.8], pbc=[False, False, True]),
    }
    for atoms in cases.values():
        atoms.rattle(0.05, seed=3)
    return cases


@pytest.mark.parametrize("name", list(_structures()))
def test_neighbor_list_matches_ase(name):
    atoms = _structures()[name]
    sender, receiver, shift, distance = neighbor_list(atoms, CUTOFF)
    i, j, s, d = ase_neighbor_list("ijSd", atoms, CUTOFF)
    ours = sorted(zip(sender.tolist(), receiver.tolist(), map(tuple, shift.tolist())))
    theirs = sorted(zip(i.tolist(), j.tolist(), map(tuple, s.tolist())))
    assert ours == theirs and len(ours) > 0
    vectors = atoms.positions[receiver] - atoms.positions[sender] + shift @ atoms.cell.array
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), distance, atol=1e-10)


def test_small_cell_atom_sees_its_own_images():
    atoms = _triclinic()
    sender, receiver, shift, _ = neighbor_list(atoms, CUTOFF)
    assert len(atoms) == 1 and (sender == receiver).all() and len(sender) > 12
    assert not (shift == 0).all(axis=1).any(), "no self-pair without a shift"


def test_graph_fields_follow_the_contract():
    atoms = _triclinic() * (2, 1, 1)
    forces = np.random.default_rng(0).normal(size=(2, 3))
    graph = atoms_to_graph(atoms, CUTOFF, Labels(energy=-7.5, forces=forces, stress=np.eye(3), node_energy=np.ones(2)))
    assert graph.pos.shape == (2, 3) and graph.z.dtype == torch.long
    assert graph.cell.shape == (1, 3, 3) and graph.pbc.shape == (1, 3) and graph.pbc.dtype == torch.bool
    assert graph.edge_index.shape[0] == 2 and graph.edge_shift.shape == (graph.edge_index.shape[1], 3)
    assert graph.edge_shift.dtype == torch.long
    assert graph.energy.shape == (1,) and graph.stress.shape == (1, 3, 3) and graph.node_energy.shape == (2,)
    torch.testing.assert_close(graph.forces, torch.tensor(forces, dtype=graph.pos.dtype))


def test_batched_edge_vectors_recompute_from_pos_cell_and_shift():
    graphs = [atoms_to_graph(atoms, CUTOFF) for atoms in _structures().values()]
    batch = Batch.from_data_list(graphs)
    sender, receiver = batch.edge_index
    cell = batch.cell[batch.batch[sender]]  # [E, 3, 3]
    vectors = batch.pos[receiver] - batch.pos[sender] + torch.einsum("ei,eij->ej", batch.edge_shift.to(cell.dtype), cell)
    lengths = vectors.norm(dim=1)
    assert (lengths < CUTOFF).all() and (lengths > 0.5).all()
    expected = sum(len(neighbor_list(atoms, CUTOFF)[0]) for atoms in _structures().values())
    assert batch.edge_index.shape[1] == expected


def test_ten_thousand_atom_periodic_graph():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (14, 14, 13)  # 10,192 atoms
    graph = atoms_to_graph(atoms, 4.0)  # first two shells (2.55, 3.6 Å) of fcc: 12 + 6 neighbors
    assert graph.num_nodes == 10_192
    assert graph.edge_index.shape[1] == 18 * 10_192
    assert torch.bincount(graph.edge_index[1]).eq(18).all()
