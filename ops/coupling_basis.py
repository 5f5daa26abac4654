"""The coupling bases of MACE's symmetric contraction (:class:`~equinet.ops.SymmetricContraction`):
orthonormal bases of the equivariant maps from the symmetric powers of one channel's irreps
to an output irrep, and the plain description of a contraction that its backends
(:mod:`equinet.ops.kernels`) are built from.

The basis is built from e3nn's Wigner-3j symbols: a symmetric map of order nu+1 is the
symmetrization of a symmetric map of order nu (to any intermediate irrep) coupled with one
more copy of the input, so the bases grow order by order and never enumerate every coupling
tree.
"""

from __future__ import annotations

import itertools
from functools import lru_cache
from typing import NamedTuple

import torch
from e3nn import o3

__all__ = ["ContractionBases", "symmetric_coupling_basis"]


class ContractionBases(NamedTuple):
    """What a symmetric contraction computes: per output irrep ``ir_out`` and order (``outputs``:
    ``(ir_out, [orders that have a basis])``), the basis ``bases[order, ir_out]``
    ``[M D^(order-1), D, K]`` contracted with ``order`` copies of one channel's features
    (``dim`` = D components) and ``K`` weights per channel, summed over the orders."""

    irreps_in: o3.Irreps
    irreps_out: o3.Irreps
    dim: int
    channels: int
    correlation: int
    outputs: list
    bases: dict


def _orthonormal_rows(matrix: torch.Tensor, atol: float = 1e-8) -> torch.Tensor:
    """An orthonormal basis (rows) of the row space of ``matrix [P, F]``.

    The rows are averages of unit-norm tensors, so a singular value below ``atol`` is
    rounding noise (an absolute threshold: a relative one would keep the noise of a
    matrix that is zero, e.g. symmetrized antisymmetric couplings).
    """
    if matrix.shape[0] == 0:
        return matrix
    _, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    rank = int((s > atol).sum())
    basis = vh[:rank]
    # Fix the sign of each vector (first large entry positive) so the basis is reproducible.
    pivots = (basis.abs() > 1e-6).float().argmax(dim=1)
    signs = torch.sign(basis.gather(1, pivots.unsqueeze(1)))
    return basis * signs


def _symmetrize(tensor: torch.Tensor, order: int) -> torch.Tensor:
    """Average ``tensor [P, M, D, ..., D]`` (``order`` D-axes) over all orderings of its D-axes."""
    perms = list(itertools.permutations(range(2, 2 + order)))
    return sum(tensor.permute(0, 1, *perm) for perm in perms) / len(perms)


@lru_cache(maxsize=None)
def _symmetric_bases(irreps_in: o3.Irreps, correlation: int) -> dict[tuple[int, o3.Irrep], torch.Tensor]:
    """``{(nu, ir): U [K, ir.dim, D, ..., D]}`` for nu = 1..correlation, float64 on CPU.

    Rows of each U are orthonormal (Frobenius) equivariant maps from the symmetric
    nu-th power of ``irreps_in`` (multiplicity 1 each, dimension D) to ``ir``.
    """
    dim = irreps_in.dim
    bases: dict[tuple[int, o3.Irrep], torch.Tensor] = {}
    for (_, ir), piece in zip(irreps_in, irreps_in.slices()):
        selection = torch.zeros(1, ir.dim, dim, dtype=torch.float64)
        selection[0, :, piece] = torch.eye(ir.dim, dtype=torch.float64)
        bases[(1, ir)] = selection
    for order in range(2, correlation + 1):
        candidates: dict[o3.Irrep, list[torch.Tensor]] = {}
        for (nu, ir_a), u_a in list(bases.items()):
            if nu != order - 1:
                continue
            for (_, ir_b), piece in zip(irreps_in, irreps_in.slices()):
                for ir_c in ir_a * ir_b:
                    w3j = o3.wigner_3j(ir_a.l, ir_b.l, ir_c.l, dtype=torch.float64)  # [a, b, c]
                    # coupled[p, c, I, j] = sum_ab w3j[a, b, c] u_a[p, a, I] delta(b, j in piece)
                    coupled = torch.zeros(u_a.shape[0], ir_c.dim, *u_a.shape[2:], dim, dtype=torch.float64)
                    coupled[..., piece] = torch.einsum("abc,paI->pcIb", w3j, u_a.flatten(2)).reshape(
                        u_a.shape[0], ir_c.dim, *u_a.shape[2:], ir_b.dim
                    )
                    candidates.setdefault(ir_c, []).append(_symmetrize(coupled, order))
        for ir_c, tensors in candidates.items():
            stacked = torch.cat(tensors)
            rows = _orthonormal_rows(stacked.flatten(1))
            if rows.shape[0]:
                bases[(order, ir_c)] = rows.view(-1, *stacked.shape[1:])
    return bases


def symmetric_coupling_basis(irreps_in, ir_out, order: int) -> torch.Tensor:
    """Orthonormal basis of the equivariant maps from Sym^order(irreps_in) to ``ir_out``.

    Args:
        irreps_in: irreps of one channel, multiplicity 1 each (e.g. ``0e+1o+2e+3o``).
        ir_out: the output irrep.
        order: the correlation order nu (number of copies of the input).

    Returns:
        ``U: [K, ir_out.dim, D, ..., D]`` (``order`` axes of size ``D = irreps_in.dim``),
        float64, symmetric in the D-axes, ``K = 0`` when no such map exists.
    """
    irreps_in, ir_out = o3.Irreps(irreps_in), o3.Irrep(ir_out)
    bases = _symmetric_bases(irreps_in, order)
    empty = torch.zeros(0, ir_out.dim, *([irreps_in.dim] * order), dtype=torch.float64)
    return bases.get((order, ir_out), empty).clone()
