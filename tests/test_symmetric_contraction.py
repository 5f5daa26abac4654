"""The MACE symmetric contraction: its coupling bases (complete, symmetric, equivariant)
and the fast element-grouped contraction against a plain per-atom reference."""

import itertools

import numpy as np
import pytest
import torch
from e3nn import o3

from equinet.ops import SymmetricContraction, symmetric_coupling_basis
from equinet.ops.symmetric_contraction import WEIGHT_SCALE
from equinet.testing import assert_equivariant, assert_float32_matches_float64

IRREPS_ONE = o3.Irreps("0e+1o+2e+3o")


def _character(irreps, theta, inverted):
    """Character of ``irreps`` at the rotation by ``theta`` (times -I when ``inverted``)."""
    return sum((ir.p if inverted else 1) * np.sin((2 * ir.l + 1) * theta / 2) / np.sin(theta / 2) for _, ir in irreps)


def _multiplicity_in_symmetric_power(irreps, ir_out, order, points=4000):
    """Multiplicity of ``ir_out`` in Sym^order(irreps), from characters integrated over O(3)."""
    theta = (np.arange(points) + 0.5) * np.pi / points
    haar = (1 - np.cos(theta)) / points  # (1 - cos t) / pi dt on [0, pi]
    total = 0.0
    for inverted in (False, True):
        power = {k: _character(irreps, k * theta, inverted and k % 2 == 1) for k in (1, 2, 3)}
        symmetric = {
            1: power[1],
            2: (power[1] ** 2 + power[2]) / 2,
            3: (power[1] ** 3 + 3 * power[2] * power[1] + 2 * power[3]) / 6,
        }[order]
        chi_out = np.sin((2 * ir_out.l + 1) * theta / 2) / np.sin(theta / 2)
        total += (ir_out.p if inverted else 1) * np.sum(haar * symmetric * chi_out)
    return round(total / 2)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("ir_out", ["0e", "1o", "2e", "3o", "1e", "0o"])
def test_basis_is_complete(order, ir_out):
    basis = symmetric_coupling_basis(IRREPS_ONE, ir_out, order)
    assert basis.shape[0] == _multiplicity_in_symmetric_power(IRREPS_ONE, o3.Irrep(ir_out), order)


@pytest.mark.parametrize("ir_out", ["0e", "1o", "2e"])
def test_basis_is_orthonormal_symmetric_and_equivariant(float64, ir_out):
    ir_out = o3.Irrep(ir_out)
    basis = symmetric_coupling_basis(IRREPS_ONE, ir_out, 3)  # [K, M, D, D, D]
    flat = basis.flatten(1)
    torch.testing.assert_close(flat @ flat.T, torch.eye(len(basis)), atol=1e-12, rtol=0)
    for perm in itertools.permutations((2, 3, 4)):
        torch.testing.assert_close(basis.permute(0, 1, *perm), basis, atol=1e-12, rtol=0)
    rotation = o3.rand_matrix() * -1  # a rotation times the inversion
    d_in, d_out = IRREPS_ONE.D_from_matrix(rotation), ir_out.D_from_matrix(rotation)
    rotated = torch.einsum("kmabc,ai,bj,cl->kmijl", basis, d_in, d_in, d_in)
    torch.testing.assert_close(rotated, torch.einsum("nm,kmabc->knabc", d_out, basis), atol=1e-11, rtol=0)


def _reference(module: SymmetricContraction, x: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
    """Plain per-atom formula: sum_nu sum_k w[z, k, c] U[k, M, i..] A[c, i] ..., no grouping, no Horner."""
    n, c = x.shape[0], module.channels
    blocks = x.split([mul * ir.dim for mul, ir in module.irreps_in], dim=1)
    a = torch.cat([b.view(n, c, ir.dim) for b, (_, ir) in zip(blocks, module.irreps_in)], dim=2)
    outputs = []
    for _, ir_out in module.irreps_out:
        out = x.new_zeros(n, c, ir_out.dim)
        for order in range(1, module.correlation + 1):
            basis = symmetric_coupling_basis(module.irreps_one, ir_out, order).to(x.dtype)
            if basis.shape[0] == 0:
                continue
            weights = WEIGHT_SCALE * getattr(module, f"weight_{order}_{ir_out}")[species]  # [n, K, C]
            contracted = {
                1: lambda: torch.einsum("kmi,nci->nckm", basis, a),
                2: lambda: torch.einsum("kmij,nci,ncj->nckm", basis, a, a),
                3: lambda: torch.einsum("kmijl,nci,ncj,ncl->nckm", basis, a, a, a),
            }[order]()
            out = out + torch.einsum("nckm,nkc->ncm", contracted, weights)
        outputs.append(out.reshape(n, -1))
    return torch.cat(outputs, dim=1)


def test_matches_the_per_atom_reference(float64):
    module = SymmetricContraction("4x0e+4x1o+4x2e+4x3o", "4x0e+4x1o+4x2e", correlation=3, num_elements=3)
    x = module.irreps_in.randn(13, -1, requires_grad=True)
    species = torch.tensor([0, 2, 2, 1, 0, 0, 2, 1, 1, 0, 2, 2, 0])
    out = module(x, species)
    expected = _reference(module, x, species)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-10)
    grad, = torch.autograd.grad(out.square().sum(), x)
    expected_grad, = torch.autograd.grad(expected.square().sum(), x)
    torch.testing.assert_close(grad, expected_grad, atol=1e-11, rtol=1e-10)


def test_equivariant_and_float32_matches_float64(float64):
    module = SymmetricContraction("3x0e+3x1o+3x2e", "3x0e+3x1o+3x1e", correlation=3, num_elements=2)
    x = module.irreps_in.randn(7, -1)
    species = torch.tensor([0, 1, 1, 0, 1, 0, 0])
    assert_equivariant(lambda x: module(x, species), [x], [module.irreps_in], module.irreps_out, atol=1e-10)
    assert_float32_matches_float64(module, [x, species], rtol=1e-5)


def test_bad_irreps_are_named():
    with pytest.raises(ValueError, match="one multiplicity C"):
        SymmetricContraction("8x0e+4x1o", "8x0e", correlation=2, num_elements=1)
    with pytest.raises(ValueError, match=r"no product of up to 1 copies .* reaches 1e"):
        SymmetricContraction("4x0e+4x1o", "4x1e", correlation=1, num_elements=1)
