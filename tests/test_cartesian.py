"""Cartesian rank-2 tensors (TensorNet): exact decomposition, the transformation law of
each part under rotations and reflections, and an equivariant message-passing layer."""

import pytest
import torch

from equinet.ops import (
    CartesianLinear,
    TensorMessagePassing,
    axial_vector,
    compose_tensor,
    decompose_tensor,
    edge_tensors,
    frobenius_norm_squared,
    skew_symmetric,
    symmetric_traceless,
)
from equinet.testing import assert_float32_matches_float64, random_orthogonal_matrix

TOL = 1e-12


def _orthogonal(reflection):
    return random_orthogonal_matrix(reflection, torch.Generator().manual_seed(7 + reflection))


def _conjugate(r, x):
    """``R X R^T`` on ``[..., 3, 3]``."""
    return r @ x @ r.T


def _tensor_law(r, x):
    """The law of TensorNet features: ``R (I + det(R) A + S) R^T``."""
    i, a, s = decompose_tensor(x)
    return _conjugate(r, i + torch.det(r) * a + s)


def _close(got, expected, atol=TOL):
    error = (got - expected).abs().max().item()
    assert error <= atol * max(1.0, expected.abs().max().item()), f"max error {error:.2e}"


def test_decomposition_is_exact_and_orthogonal(float64):
    x = torch.randn(5, 4, 3, 3)
    i, a, s = decompose_tensor(x)
    _close(compose_tensor(i, a, s), x)
    eye = torch.eye(3)
    _close(i, i.diagonal(dim1=-2, dim2=-1)[..., :1, None] * eye)  # a multiple of 1
    _close(a, -a.transpose(-2, -1))
    _close(s, s.transpose(-2, -1))
    _close(s.diagonal(dim1=-2, dim2=-1).sum(-1), torch.zeros(5, 4))
    for p, q in ((i, a), (i, s), (a, s)):
        _close((p * q).sum((-2, -1)), torch.zeros(5, 4))
    _close(frobenius_norm_squared(x), sum(frobenius_norm_squared(part) for part in (i, a, s)))
    # Each part is its own decomposition.
    for index, part in enumerate((i, a, s)):
        for other, piece in enumerate(decompose_tensor(part)):
            _close(piece, part if other == index else torch.zeros_like(part))


def test_edge_tensors_of_a_vector(float64):
    v, w = torch.randn(6, 3), torch.randn(6, 3)
    _close((skew_symmetric(v) @ w.unsqueeze(-1)).squeeze(-1), torch.linalg.cross(v, w))
    _close(axial_vector(skew_symmetric(v)), v)
    _close(symmetric_traceless(v), v[:, :, None] * v[:, None, :] - (v * v).sum(-1)[:, None, None] / 3 * torch.eye(3))
    identity, skew, traceless = edge_tensors(v)
    unit = v / v.norm(dim=-1, keepdim=True)
    _close(identity, torch.eye(3).expand(6, 3, 3))
    _close(skew, skew_symmetric(unit))
    _close(traceless, symmetric_traceless(unit))
    # They are already the parts of a tensor: decomposing their sum gives them back.
    for got, expected in zip(decompose_tensor(identity + skew + traceless), (identity, skew, traceless)):
        _close(got, expected)


@pytest.mark.parametrize("reflection", [False, True])
def test_parts_of_a_tensor_from_polar_vectors_transform_as_r_x_rt(float64, reflection):
    r = _orthogonal(reflection)
    u, v = torch.randn(2, 8, 3)
    x = u[:, :, None] * v[:, None, :] + torch.randn(8)[:, None, None] * torch.eye(3)  # u v^T + c 1
    x_rotated = (u @ r.T)[:, :, None] * (v @ r.T)[:, None, :] + (x - u[:, :, None] * v[:, None, :])
    _close(x_rotated, _conjugate(r, x))
    i, a, s = decompose_tensor(x)
    i_rotated, a_rotated, s_rotated = decompose_tensor(x_rotated)
    _close(i_rotated, i)  # invariant
    _close(a_rotated, _conjugate(r, a))
    _close(s_rotated, _conjugate(r, s))
    # The axial vector of A, (v x u) / 2, is a pseudovector: det(R) R a.
    _close(axial_vector(a), 0.5 * torch.linalg.cross(v, u))
    _close(axial_vector(a_rotated), torch.det(r) * axial_vector(a) @ r.T)
    for part, rotated in ((i, i_rotated), (a, a_rotated), (s, s_rotated)):
        _close(frobenius_norm_squared(rotated), frobenius_norm_squared(part))


@pytest.mark.parametrize("reflection", [False, True])
def test_edge_tensors_transform_with_the_parity_of_a_vector(float64, reflection):
    r = _orthogonal(reflection)
    vec = torch.randn(8, 3)
    identity, skew, traceless = edge_tensors(vec)
    identity_r, skew_r, traceless_r = edge_tensors(vec @ r.T)
    _close(identity_r, identity)
    _close(traceless_r, _conjugate(r, traceless))  # even in the vector
    # [Rv]_x = det(R) R [v]_x R^T: under a reflection A does not follow R A R^T.
    _close(skew_r, torch.det(r) * _conjugate(r, skew))
    if reflection:
        assert (skew_r - _conjugate(r, skew)).abs().max() > 0.1
    _close(compose_tensor(identity_r, skew_r, traceless_r), _tensor_law(r, identity + skew + traceless))


def test_inversion_law_is_the_transpose(float64):
    x = torch.randn(4, 2, 3, 3)
    _close(_tensor_law(-torch.eye(3), x), x.transpose(-2, -1))


@pytest.mark.parametrize("law", [_conjugate, _tensor_law])
@pytest.mark.parametrize("reflection", [False, True])
def test_cartesian_linear_is_equivariant_and_keeps_the_parts(float64, reflection, law):
    r = _orthogonal(reflection)
    linear = CartesianLinear(4, 6)
    x = torch.randn(5, 4, 3, 3)
    out = linear(*decompose_tensor(x))
    for got, expected in zip(decompose_tensor(compose_tensor(*out)), out):
        _close(got, expected)
    _close(compose_tensor(*linear(*decompose_tensor(law(r, x)))), law(r, compose_tensor(*out)))


def _graph(num_nodes=7, num_edges=30, channels=4):
    x = torch.randn(num_nodes, channels, 3, 3)
    weights = torch.randn(num_edges, 3, channels)
    edge_index = torch.randint(0, num_nodes, (2, num_edges))
    return x, weights, edge_index


@pytest.mark.parametrize("law", [_conjugate, _tensor_law])
@pytest.mark.parametrize("reflection", [False, True])
def test_message_passing_is_equivariant(float64, reflection, law):
    r = _orthogonal(reflection)
    layer = TensorMessagePassing(4)
    x, weights, edge_index = _graph()
    out = layer(x, weights, edge_index)
    assert out.shape == x.shape
    _close(layer(law(r, x), weights, edge_index), law(r, out))


def _reference_message_passing(layer, x, weights, edge_index):
    """The docstring's formula, edge by edge: M_i = sum_j f^I I'_j + f^A A'_j + f^S S'_j."""
    x = x / (frobenius_norm_squared(x) + 1)[..., None, None]
    parts = layer.linear_in(*decompose_tensor(x))  # I', A', S' of every atom
    y = compose_tensor(*parts)
    m = torch.zeros_like(x)
    for edge, (j, i) in enumerate(edge_index.T.tolist()):
        for k, part in enumerate(parts):
            m[i] += weights[edge, k, :, None, None] * part[j]
    product = m @ y + y @ m
    product = product / (frobenius_norm_squared(product) + 1)[..., None, None]
    dx = compose_tensor(*layer.linear_out(*decompose_tensor(product)))
    return x + dx + dx @ dx


def test_message_passing_matches_the_reference_formula(float64):
    layer = TensorMessagePassing(4)
    for seed in range(3):  # fresh random inputs, with repeated (i, j) pairs as in small periodic cells
        torch.manual_seed(seed)
        x, weights, edge_index = _graph()
        edge_index = torch.cat([edge_index, edge_index[:, :5]], dim=1)
        weights = torch.cat([weights, torch.randn(5, 3, 4)])
        _close(layer(x, weights, edge_index), _reference_message_passing(layer, x, weights, edge_index))


def test_messages_sum_into_num_receivers_rows_from_a_table_of_senders(float64):
    # A block of edges reads a table of its senders' rows and sums into rows of its own receivers.
    layer = TensorMessagePassing(4)
    x, weights, edge_index = _graph()
    edge_index[1] %= 3
    _, y = layer.node_tensors(x)
    senders, local_senders = torch.unique(edge_index[0], return_inverse=True)
    block = layer.summed_messages(y[senders], weights, torch.stack([local_senders, edge_index[1]]), 3)
    assert block.shape == (3, 4, 3, 3)
    whole = layer.summed_messages(y, weights, edge_index, len(x))
    _close(block, whole[:3])
    assert whole[3:].abs().max() == 0
    _close(layer.update(*layer.node_tensors(x), whole), layer(x, weights, edge_index))


def test_message_passing_is_permutation_equivariant(float64):
    layer = TensorMessagePassing(4)
    x, weights, edge_index = _graph()
    order = torch.randperm(len(x))
    inverse = torch.argsort(order)
    _close(layer(x[order], weights, inverse[edge_index]), layer(x, weights, edge_index)[order])


def test_message_passing_without_edges_and_its_gradients(float64):
    layer = TensorMessagePassing(3)
    x = torch.randn(4, 3, 3, 3, requires_grad=True)
    out = layer(x, torch.zeros(0, 3, 3), torch.zeros(2, 0, dtype=torch.long))
    # No messages: M = 0, so dX = 0 and the output is the normalized input.
    _close(out, x / (frobenius_norm_squared(x) + 1)[..., None, None])
    x, weights, edge_index = _graph(channels=3)
    x.requires_grad_(True)
    weights.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, w: layer(x, w, edge_index), (x, weights))


def test_message_passing_float32_matches_float64(float64):
    x, weights, edge_index = _graph()
    assert_float32_matches_float64(TensorMessagePassing(4), [x, weights, edge_index], rtol=1e-5)


def test_bad_shapes_say_what_was_expected():
    layer = TensorMessagePassing(4)
    x, weights, edge_index = _graph()
    with pytest.raises(ValueError, match=r"x must have shape \[n, 4, 3, 3\] \(channels = 4\), got \[7, 4, 9\]"):
        layer(x.view(7, 4, 9), weights, edge_index)
    with pytest.raises(ValueError, match=r"edge_weights must have shape \[E, 3, 4\] = \[30, 3, 4\]"):
        layer(x, weights[:, :2], edge_index)
    with pytest.raises(ValueError, match=r"edge_vec must be a tensor of 3-vectors \[..., 3\], got shape \[5, 2\]"):
        edge_tensors(torch.randn(5, 2))
    with pytest.raises(ValueError, match="channels must be a positive integer, got 0"):
        TensorMessagePassing(0)
