"""Edges paired with their reverses (ops/edge_pairs.py): every bond of a neighbour list
is found twice and paired exactly, and a model that runs its radial networks once per
pair gives the same energies, forces, stress and training gradients as on every edge."""

import pytest
import torch
from ase.build import bulk, molecule
from torch.fx.experimental.proxy_tensor import make_fx
from torch_geometric.data import Batch

import equinet.potentials.tensornet as tensornet_module
from equinet.datasets import atoms_to_graph
from equinet.ops import reverse_edge_pairs
from equinet.potentials import build_model


def _small_cell():
    """Two atoms in a cell far smaller than the cutoff: many edges, atoms see their own images."""
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    atoms.symbols[1] = "Ni"
    atoms.rattle(0.1, seed=1)
    return atoms


def _edges(atoms, cutoff=4.0):
    graph = atoms_to_graph(atoms, cutoff, dtype=torch.float64)
    cell = torch.as_tensor(atoms.cell.array, dtype=torch.float64)
    pos = graph.pos.to(torch.float64)
    sender, receiver = graph.edge_index
    return graph.edge_index, pos[receiver] - pos[sender] + graph.edge_shift.to(torch.float64) @ cell


@pytest.mark.parametrize("atoms", [_small_cell(), molecule("CH3CH2OH")], ids=["periodic", "molecule"])
def test_every_edge_is_paired_with_its_reverse(atoms):
    edge_index, edge_vec = _edges(atoms)
    pairs = reverse_edge_pairs(edge_index, edge_vec)
    num_edges = edge_vec.shape[0]
    assert pairs.first.shape == (num_edges // 2,) and pairs.inverse.shape == (num_edges,)
    counts = torch.bincount(pairs.inverse)
    assert (counts == 2).all()
    for group in range(pairs.first.shape[0]):
        e, f = (pairs.inverse == group).nonzero().flatten().tolist()
        assert edge_index[0, e] == edge_index[1, f] and edge_index[1, e] == edge_index[0, f]
        assert torch.equal(edge_vec[e], -edge_vec[f])
    assert (pairs.inverse[pairs.first] == torch.arange(num_edges // 2)).all()


def test_edges_without_their_reverse_stay_alone():
    edge_index, edge_vec = _edges(_small_cell())
    one_sided = edge_index[0] < edge_index[1]
    assert reverse_edge_pairs(edge_index[:, one_sided], edge_vec[one_sided]) is None
    keep = torch.ones(edge_vec.shape[0], dtype=torch.bool)
    keep[0] = False  # the reverse of edge 0 loses its pair
    pairs = reverse_edge_pairs(edge_index[:, keep], edge_vec[keep])
    assert (torch.bincount(pairs.inverse) == 1).sum() == 1
    nudged = edge_vec.clone()
    nudged[:, 0] += torch.linspace(0, 1e-12, edge_vec.shape[0], dtype=torch.float64)  # no longer exact negatives
    assert reverse_edge_pairs(edge_index, nudged) is None


def test_symbolic_sizes_use_every_edge():
    edge_index, edge_vec = _edges(molecule("H2O"))
    seen = []
    make_fx(lambda i, v: seen.append(reverse_edge_pairs(i, v)) or v.sum(), tracing_mode="symbolic")(edge_index, edge_vec)
    assert seen == [None]


@pytest.mark.parametrize("atoms", [_small_cell(), molecule("CH3CH2OH")], ids=["periodic", "molecule"])
def test_tensornet_on_edge_pairs_equals_tensornet_on_every_edge(float64, atoms, monkeypatch):
    elements = sorted(set(atoms.numbers.tolist()))
    statistics = {"elements": elements, "atomic_energies": {z: 0.0 for z in elements}, "avg_num_neighbors": 10.0, "force_rms": 1.0}
    torch.manual_seed(0)
    model = build_model({"name": "tensornet", "dtype": "float64", "cutoff": 4.0, "hidden_channels": 4, "num_rbf": 4}, statistics)
    batch = Batch.from_data_list([atoms_to_graph(atoms, 4.0, dtype=torch.float64)])
    periodic = bool(atoms.pbc.all())

    def outputs_and_loss_gradient():
        out = model(batch, forces=True, stress=periodic, create_graph=True)
        keys = ["energy", "forces"] + (["stress"] if periodic else [])
        loss = sum(out[key].square().sum() for key in keys)
        return [out[key].detach() for key in keys] + list(torch.autograd.grad(loss, list(model.parameters())))

    calls = []
    monkeypatch.setattr(tensornet_module, "reverse_edge_pairs", lambda *a: calls.append(1) or reverse_edge_pairs(*a))
    paired = outputs_and_loss_gradient()
    assert calls  # the paired path ran
    monkeypatch.setattr(tensornet_module, "reverse_edge_pairs", lambda *a: None)
    every_edge = outputs_and_loss_gradient()
    for got, expected in zip(paired, every_edge):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
