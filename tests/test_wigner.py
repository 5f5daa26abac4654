import math

import pytest
import torch
from e3nn import o3

from equinet.ops import edge_wigner_D, spherical_harmonics, wigner_D_from_matrix

L_MAX = 8
BOUNDARY = 1 / math.sqrt(2)  # where the second chart takes over


def _edges(num_random=40):
    """Random edges plus the hard ones: on every axis (both signs), next to ±y, and on both
    sides of the chart boundary |y| = 1/√2."""
    special = [
        [0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [0.0, 3.5, 0.0], [0.0, -0.2, 0.0],
        [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, -2.0],
        [1e-9, 1.0, -1e-9], [-1e-12, -1.0, 1e-12], [1e-5, 2.0, 3e-5],
        [0.6, BOUNDARY, 0.0], [0.0, -BOUNDARY, 0.7], [0.5, BOUNDARY + 1e-12, 0.5], [0.5, BOUNDARY - 1e-12, 0.5],
    ]  # fmt: skip
    return torch.cat([torch.tensor(special), 2.0 * torch.randn(num_random, 3)])


def test_recursion_matches_e3nn(float64):
    rotations = o3.rand_matrix(20)
    ours = wigner_D_from_matrix(L_MAX, rotations)
    for l in range(L_MAX + 1):
        torch.testing.assert_close(ours[l], o3.Irrep(l, (-1) ** l).D_from_matrix(rotations), atol=1e-12, rtol=0)


def test_recursion_is_accurate_whatever_the_default_dtype():
    # e3nn's D_from_matrix follows the default dtype (float32: ~1e-6 error); ours follows the input.
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        rotations = o3.rand_matrix(5)
        reference = o3.Irrep(6, 1).D_from_matrix(rotations)
    finally:
        torch.set_default_dtype(previous)
    assert torch.get_default_dtype() == torch.float32
    torch.testing.assert_close(wigner_D_from_matrix(6, rotations)[6], reference, atol=1e-12, rtol=0)


@pytest.mark.parametrize("m_max", [None, 0, 2])
def test_edge_is_rotated_onto_the_y_axis(float64, m_max):
    # D^l(R) Y^l(r) = Y^l(ŷ): only m = 0 (the middle row) is left, equal to sqrt(2l + 1).
    edge_vec = _edges()
    sh = spherical_harmonics(L_MAX, edge_vec)
    blocks = edge_wigner_D(L_MAX, edge_vec, m_max)
    for l, d in enumerate(blocks):
        k = l if m_max is None else min(l, m_max)
        assert d.shape == (len(edge_vec), 2 * k + 1, 2 * l + 1)
        rotated = (d @ sh[:, l * l : (l + 1) ** 2, None]).squeeze(-1)
        expected = torch.zeros_like(rotated)
        expected[:, k] = math.sqrt(2 * l + 1)
        torch.testing.assert_close(rotated, expected, atol=1e-12, rtol=0)


def test_blocks_are_wigner_matrices_of_one_rotation(float64):
    edge_vec = _edges()
    blocks = edge_wigner_D(L_MAX, edge_vec)
    rotation = blocks[1]  # D^1 = R in e3nn's basis (x, y, z)
    torch.testing.assert_close(rotation @ rotation.transpose(1, 2), torch.eye(3).expand(len(edge_vec), 3, 3), atol=1e-14, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rotation), torch.ones(len(edge_vec)), atol=1e-14, rtol=0)
    unit_y = torch.tensor([0.0, 1.0, 0.0]).expand(len(edge_vec), 3)
    torch.testing.assert_close((rotation @ edge_vec.unsqueeze(-1)).squeeze(-1) / edge_vec.norm(dim=-1, keepdim=True), unit_y, atol=1e-14, rtol=0)
    # The CG recursion is the reference here: e3nn's D_from_matrix goes through Euler angles,
    # which lose precision (1e-9) next to the y axis.
    for d, reference in zip(blocks, wigner_D_from_matrix(L_MAX, rotation)):
        torch.testing.assert_close(d, reference, atol=1e-12, rtol=0)
    truncated = edge_wigner_D(L_MAX, edge_vec, m_max=2)
    for l in range(L_MAX + 1):
        k = min(l, 2)
        torch.testing.assert_close(truncated[l], blocks[l][:, l - k : l + k + 1], atol=1e-14, rtol=0)


def test_gradients_are_finite_on_the_axis_and_correct(float64):
    # Inside each chart the rotation is smooth, so finite differences around edges on ±y
    # (and next to them) check the gradients. Edges on the chart boundary are left out:
    # there the frame jumps by a rotation about ŷ (the gauge) by design.
    edge_vec = torch.tensor([[0.0, 1.0, 0.0], [0.0, -2.0, 0.0], [1e-9, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.3, -0.4, 0.8]])
    edge_vec.requires_grad_(True)
    blocks = edge_wigner_D(3, edge_vec, m_max=2)
    projection = [torch.randn_like(d) for d in blocks]
    (grad,) = torch.autograd.grad(sum((d * p).sum() for d, p in zip(blocks, projection)), edge_vec)
    assert torch.isfinite(grad).all()
    assert torch.autograd.gradcheck(lambda v: torch.cat([d.flatten() for d in edge_wigner_D(3, v, m_max=2)]), (edge_vec,))
    assert torch.autograd.gradgradcheck(lambda v: sum((d * p).sum() for d, p in zip(edge_wigner_D(3, v, m_max=2), projection)), (edge_vec,))


def test_float32_matches_float64():
    edge_vec = _edges().double()
    for d64, d32 in zip(edge_wigner_D(L_MAX, edge_vec), edge_wigner_D(L_MAX, edge_vec.float())):
        assert d32.dtype == torch.float32
        torch.testing.assert_close(d32.double(), d64, atol=2e-6, rtol=0)


def test_no_edges_and_bad_input():
    blocks = edge_wigner_D(3, torch.zeros(0, 3), m_max=1)
    assert [tuple(d.shape) for d in blocks] == [(0, 1, 1), (0, 3, 3), (0, 3, 5), (0, 3, 7)]
    with pytest.raises(ValueError, match=r"edge_vec must have shape \[E, 3\]"):
        edge_wigner_D(2, torch.randn(4, 2))
    with pytest.raises(ValueError, match="l_max must be a non-negative integer"):
        edge_wigner_D(-1, torch.randn(4, 3))
    with pytest.raises(ValueError, match="m_max must be a non-negative integer"):
        edge_wigner_D(2, torch.randn(4, 3), m_max=1.5)
    with pytest.raises(ValueError, match=r"rotation must have shape \[\.\.\., 3, 3\]"):
        wigner_D_from_matrix(2, torch.randn(4, 3))
