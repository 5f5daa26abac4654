"""Blocked message aggregation (ops/scatter.py) against its plain formula: values and
derivatives to second order, several blocks with a partial last one, no edges, and the
traced (symbolic-size) fallback."""

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

import equinet.ops.scatter as scatter
from equinet.ops.scatter import edge_dot, gather_scale_scatter, scatter_outer


def _graph(num_senders=6, num_receivers=5, num_edges=23, channels=4, components=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_senders, components, channels, generator=g, requires_grad=True)
    weights = torch.randn(num_edges, channels, generator=g, requires_grad=True)
    sender = torch.randint(0, num_senders, (num_edges,), generator=g)
    receiver = torch.randint(0, num_receivers, (num_edges,), generator=g)  # unsorted, repeated
    return x, weights, sender, receiver, num_receivers


def _reference(x, weights, sender, receiver, num_receivers):
    out = torch.zeros(num_receivers, *x.shape[1:], dtype=x.dtype)
    for e in range(sender.shape[0]):
        out[receiver[e]] += weights[e] * x[sender[e]]
    return out


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(scatter, "EDGE_BLOCK", 5)  # 23 edges: four full blocks and a partial one


def test_gather_scale_scatter_matches_the_edge_by_edge_sum(float64, small_blocks):
    x, weights, sender, receiver, n = _graph()
    out = gather_scale_scatter(x, weights, sender, receiver, n)
    assert out.grad_fn is not None and "GatherScaleScatter" in type(out.grad_fn).__name__  # the blocked path ran
    torch.testing.assert_close(out, _reference(x, weights, sender, receiver, n), rtol=0, atol=1e-12)


def test_edge_dot_matches_its_formula(float64, small_blocks):
    a, _, index_a, index_b, _ = _graph()
    b = torch.randn(5, 3, 4, requires_grad=True)
    out = edge_dot(a, b, index_a, index_b)
    expected = torch.stack([(a[index_a[e]] * b[index_b[e]]).sum(0) for e in range(index_a.shape[0])])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_scatter_outer_matches_its_formula(float64, small_blocks):
    _, weights, _, receiver, n = _graph()
    vectors = torch.randn(23, 3, requires_grad=True)
    out = scatter_outer(weights, vectors, receiver, n)
    assert "ScatterOuter" in type(out.grad_fn).__name__
    expected = torch.zeros(n, 3, 4)
    for e in range(23):
        expected[receiver[e]] += torch.outer(vectors[e], weights[e])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_first_and_second_derivatives(float64, small_blocks):
    x, weights, sender, receiver, n = _graph(num_senders=4, num_receivers=3, num_edges=12, channels=2, components=2)
    b = torch.randn(3, 2, 2, requires_grad=True)
    vectors = torch.randn(12, 3, requires_grad=True)
    for fn, inputs in (
        (lambda x, w: gather_scale_scatter(x, w, sender, receiver, n), (x, weights)),
        (lambda a, b: edge_dot(a, b, sender, receiver), (x, b)),
        (lambda w, v: scatter_outer(w, v, receiver, n), (weights, vectors)),
    ):
        assert torch.autograd.gradcheck(fn, inputs)
        assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("operator", ["gather_scale_scatter", "scatter_outer"])
def test_gradients_match_the_plain_formula(float64, small_blocks, operator):
    x, weights, sender, receiver, n = _graph(seed=3)
    if operator == "gather_scale_scatter":
        blocked = lambda x, w: gather_scale_scatter(x, w, sender, receiver, n)  # noqa: E731
        plain = lambda x, w: torch.zeros(n, 3, 4).index_add(0, receiver, w[:, None] * x[sender])  # noqa: E731
    else:
        x = torch.randn(23, 3, requires_grad=True)  # per-edge vectors
        blocked = lambda v, w: scatter_outer(w, v, receiver, n)  # noqa: E731
        plain = lambda v, w: torch.zeros(n, 3, 4).index_add(0, receiver, v[..., None] * w[:, None])  # noqa: E731
    target = torch.randn(n, 3, 4)

    def loss(aggregate):  # a force-training-like loss: differentiate, then differentiate again
        gx, gw = torch.autograd.grad((aggregate(x, weights).square() * target).sum(), (x, weights), create_graph=True)
        return gx.square().sum() + gw.sin().sum()

    expected = torch.autograd.grad(loss(plain), (x, weights))
    got = torch.autograd.grad(loss(blocked), (x, weights))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=1e-10)


def test_no_edges(float64):
    x, weights, sender, receiver, n = _graph(num_edges=0)
    out = gather_scale_scatter(x, weights, sender, receiver, n)
    assert out.shape == (n, 3, 4) and not out.any()
    gx, gw = torch.autograd.grad(out.sum(), (x, weights), allow_unused=True)
    assert not gx.any() and gw.shape == (0, 4)
    assert edge_dot(x, x, sender, sender).shape == (0, 4)
    assert not scatter_outer(weights, torch.zeros(0, 3), receiver, n).any()


def test_symbolic_tracing_takes_the_plain_formula(float64):
    x, weights, sender, receiver, n = _graph()
    traced = make_fx(lambda x, w, s, r: gather_scale_scatter(x, w, s, r, n), tracing_mode="symbolic")(
        x.detach(), weights.detach(), sender, receiver
    )
    x2, w2, s2, r2, _ = _graph(num_senders=6, num_edges=41, seed=1)
    torch.testing.assert_close(traced(x2.detach(), w2.detach(), s2, r2), _reference(x2, w2, s2, r2, n).detach())
    traced = make_fx(lambda w, v, r: scatter_outer(w, v, r, n), tracing_mode="symbolic")(
        weights.detach(), torch.randn(23, 3), receiver
    )
    v2 = torch.randn(41, 3)
    expected = torch.zeros(n, 3, 4).index_add(0, r2, v2[..., None] * w2.detach()[:, None])
    torch.testing.assert_close(traced(w2.detach(), v2, r2), expected)


def test_bad_shapes_say_what_was_expected():
    x, weights, sender, receiver, n = _graph()
    with pytest.raises(ValueError, match=r"weights must have shape \[E, C\] = \[23, 4\]"):
        gather_scale_scatter(x, weights[:, :3], sender, receiver, n)
    with pytest.raises(ValueError, match=r"x must have shape \[n, K, C\]"):
        gather_scale_scatter(x[:, :, 0], weights, sender, receiver, n)
    with pytest.raises(ValueError, match="sender and receiver must both have shape"):
        gather_scale_scatter(x, weights, sender, receiver[:-1], n)
    with pytest.raises(ValueError, match=r"must share E, got \[23, 4\], \[22, 3\] and \[23\]"):
        scatter_outer(weights, torch.randn(22, 3), receiver, n)
    with pytest.raises(ValueError, match=r"a \[n_a, K, C\] and b \[n_b, K, C\]"):
        edge_dot(x, x[:, :, :2], sender, sender)


def test_tensornet_force_training_gradient_matches_the_plain_path(float64, small_blocks, monkeypatch):
    """The loss gradient of a force-trained TensorNet (a second derivative) is the same
    through the blocked functions as through the plain formula."""
    from ase.build import bulk
    from torch_geometric.data import Batch

    from equinet.datasets import atoms_to_graph
    from equinet.potentials import build_model

    atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    atoms.symbols[1] = "Ni"
    atoms.rattle(0.1, seed=1)
    statistics = {"elements": [28, 29], "atomic_energies": {28: 0.0, 29: 0.0}, "avg_num_neighbors": 10.0, "force_rms": 1.0}
    model = build_model({"name": "tensornet", "dtype": "float64", "cutoff": 3.0, "hidden_channels": 4, "num_rbf": 4}, statistics)
    batch = Batch.from_data_list([atoms_to_graph(atoms, 3.0, dtype=torch.float64)])
    assert batch.edge_index.shape[1] > 3 * scatter.EDGE_BLOCK

    def loss_gradient():
        out = model(batch, forces=True, stress=True, create_graph=True)
        loss = out["energy"].square().sum() + out["forces"].square().sum() + out["stress"].square().sum()
        return torch.autograd.grad(loss, list(model.parameters()))

    blocked = loss_gradient()
    monkeypatch.setattr(scatter, "_use_blocks", lambda *tensors: False)
    plain = loss_gradient()
    for got, expected in zip(blocked, plain):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
