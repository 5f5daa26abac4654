"""Real Wigner-D matrices, and those of the rotation that takes each edge to the primary axis.

eSCN (Passaro & Zitnick, ICML 2023) rotates features into a frame where the edge lies
along one axis. We take e3nn's **y axis** as that axis, because e3nn's real spherical
harmonics are azimuthal about y: ``Y^l(ŷ)`` is zero except its ``m = 0`` (middle)
component, ``sqrt(2l + 1)`` in component normalization. So for a rotation ``R`` with
``R r̂ = ŷ``,

    D^l(R) Y^l(r̂) = Y^l(R r̂) = sqrt(2l + 1) e_{m=0}.

**The rotation, by two angles in two charts.** With e3nn's angles
``r̂ = Y(α) X(β) ŷ`` (``x = sin β sin α``, ``y = cos β``, ``z = sin β cos α``), the
rotation ``R = X(-β) Y(-α)`` takes ``r̂`` to ``ŷ`` and

    D^l(R) = K_l Z_l(-β) K_l^T Z_l(-α),

where ``Z_l(θ) = D^l(Y(θ))`` is sparse (``cos mθ`` on the diagonal, ``∓sin mθ`` on the
anti-diagonal) and ``K_l = D^l(Q)`` for a fixed rotation ``Q`` taking ``ŷ`` to ``x̂``.
The azimuth ``α`` is undefined on the y axis, so edges with ``|r̂_y| > 1/√2`` use a
second chart: they are first turned by the fixed quarter turn ``T`` about x (which
puts them at ``|y| < 1/√2``), ``R = X(-β') Y(-α') T`` and ``D^l(R) = [...] D^l(T)``.
Every edge thus has ``sin β >= 1/√2``: ``cos α = z / sin β`` and ``sin α = x / sin β``
are smooth, and values and gradients are finite everywhere, including edges exactly
parallel or antiparallel to ŷ. No single continuous frame exists on the sphere
(hairy-ball theorem): the frame jumps where the chart changes, by a rotation about ŷ.
That rotation is the gauge of the edge frame, and what is built on it must not depend
on it (the SO(2) convolution does not: its map commutes with rotations about ŷ).

**Cost.** ``K_l Z(-β) K_l^T`` is linear in the ``2l + 1`` functions ``cos pβ``,
``sin pβ``, so it is one matrix product against fixed matrices for all edges; ``Z(-α)``
is applied elementwise; the second chart costs one more product on its edges. Only
the rows ``|m| <= m_max`` are formed when ``m_max`` is given (an SO(2) convolution
needs no others): O(m_max l^2) per degree and edge, with no loop over edges.

**Fixed matrices** (``K_l``, ``D^l(T)``) come from :func:`wigner_D_from_matrix`, which
builds ``D^l`` from ``D^1 = R`` (e3nn's ``1o`` components are x, y, z) by the
Clebsch–Gordan recursion ``D^l = (2l + 1) C^T (D^{l-1} ⊗ D^1) C`` with
``C = wigner_3j(l-1, 1, l)``, in the dtype of its input (e3nn's ``D_from_matrix``
follows torch's default dtype instead).
"""

from __future__ import annotations

import math

import torch
from e3nn import o3

__all__ = ["edge_wigner_D", "wigner_D_from_matrix"]

# Edges with |y| above this use the second chart. 1/√2 is the only value for which the
# quarter turn T leaves every edge of both charts at least this far from the y axis.
_CHART_BOUNDARY = 1.0 / math.sqrt(2.0)
_Y_TO_X = torch.tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)  # Q: ŷ → x̂
_QUARTER_TURN_X = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)  # T: (x, y, z) → (x, -z, y)


def _check_l_max(l_max) -> None:
    if not isinstance(l_max, int) or l_max < 0:
        raise ValueError(f"l_max must be a non-negative integer, got {l_max!r}")


def wigner_D_from_matrix(l_max: int, rotation: torch.Tensor) -> list[torch.Tensor]:
    """Real Wigner-D matrices of degrees 0..l_max in e3nn's basis, by CG recursion.

    ``D[l] @ Y^l(v) = Y^l(rotation @ v)`` for e3nn's (and equinet's) spherical harmonics;
    equal to ``o3.Irrep(l, (-1)**l).D_from_matrix(rotation)``, but accurate in the dtype
    of ``rotation`` whatever torch's default dtype.

    Args:
        l_max: highest degree (any non-negative integer).
        rotation: ``[..., 3, 3]`` rotation matrices (orthogonal, determinant +1).

    Returns:
        ``l_max + 1`` tensors ``[..., 2l+1, 2l+1]``.

    Example:
        >>> d = wigner_D_from_matrix(2, o3.rand_matrix())
        >>> [tuple(block.shape) for block in d]
        [(1, 1), (3, 3), (5, 5)]
    """
    _check_l_max(l_max)
    if rotation.shape[-2:] != (3, 3):
        raise ValueError(f"rotation must have shape [..., 3, 3], got {tuple(rotation.shape)}")
    batch = rotation.shape[:-2]
    d1 = rotation.reshape(-1, 3, 3)
    blocks = [torch.ones(*batch, 1, 1, dtype=rotation.dtype, device=rotation.device)]
    if l_max >= 1:
        blocks.append(rotation)
    previous, n = d1, d1.shape[0]
    for l in range(2, l_max + 1):
        c = o3.wigner_3j(l - 1, 1, l, dtype=torch.float64).to(rotation)  # [a, b, m], unit norm
        # (D^{l-1} ⊗ D^1) C, one factor at a time, then (2l + 1) C^T on the left.
        t = (previous @ c.reshape(2 * l - 1, -1)).view(n, 2 * l - 1, 3, 2 * l + 1)
        t = torch.einsum("nbd,nadm->nabm", d1, t).reshape(n, 3 * (2 * l - 1), 2 * l + 1)
        previous = (2 * l + 1) * (c.reshape(-1, 2 * l + 1).T @ t)
        blocks.append(previous.view(*batch, 2 * l + 1, 2 * l + 1))
    return blocks


_CONSTANTS: dict[tuple[int, int, torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


def _chart_constants(l: int, k: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For degree ``l`` and rows ``|m| <= k``: the matrices of ``K Z(-β) K^T`` in the basis
    ``[1, cos β, .., cos lβ, sin β, .., sin lβ]`` (``[2l+1, (2k+1)(2l+1)]``) and ``D^l(T)``.

    Computed once in float64.
    """
    key = (l, k, dtype, device)
    if key not in _CONSTANTS:
        size = 2 * l + 1
        q = wigner_D_from_matrix(l, _Y_TO_X)[l]
        rows = q[l - k : l + k + 1]
        basis = torch.zeros(size, size, size, dtype=torch.float64)  # [function, j, n]: Z(-β) = sum_f f(β) basis[f]
        basis[0, l, l] = 1.0
        for p in range(1, l + 1):
            basis[p, l + p, l + p] = basis[p, l - p, l - p] = 1.0  # cos pβ on the diagonal
            basis[l + p, l + p, l - p], basis[l + p, l - p, l + p] = 1.0, -1.0  # sin pβ: Z(-β)[p, -p], [-p, p]
        matrices = torch.einsum("ij,fjn,mn->fim", rows, basis, q).reshape(size, -1)
        turn = wigner_D_from_matrix(l, _QUARTER_TURN_X)[l]
        _CONSTANTS[key] = (matrices.to(dtype=dtype, device=device), turn.to(dtype=dtype, device=device))
    return _CONSTANTS[key]


def _multiples(cos: torch.Tensor, sin: torch.Tensor, n_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos(nθ)``, ``sin(nθ)`` for n = 0..n_max from ``cos θ``, ``sin θ`` (angle addition): ``[E, n_max+1]`` each."""
    cosines, sines = [torch.ones_like(cos), cos], [torch.zeros_like(sin), sin]
    for _ in range(2, n_max + 1):
        cosines.append(cosines[-1] * cos - sines[-1] * sin)
        sines.append(sines[-1] * cos + cosines[-2] * sin)
    return torch.stack(cosines[: n_max + 1], dim=-1), torch.stack(sines[: n_max + 1], dim=-1)


def edge_wigner_D(l_max: int, edge_vec: torch.Tensor, m_max: int | None = None) -> list[torch.Tensor]:
    """Wigner-D matrices (rows ``|m| <= m_max``) of the rotation taking each edge to ŷ.

    ``edge_wigner_D(l_max, r)[l] @ Y^l(r)`` is zero except its middle (``m = 0``) entry,
    ``sqrt(2l + 1)``. The rotation about ŷ (the gauge) is fixed by two charts; see
    the module docstring.

    Args:
        l_max: highest degree.
        edge_vec: ``[E, 3]`` non-zero edge vectors (any length).
        m_max: keep only the rows ``m = -k..k``, ``k = min(l, m_max)``, of each matrix;
            ``None`` keeps all.

    Returns:
        ``l_max + 1`` tensors ``[E, 2k+1, 2l+1]``; row ``i`` is ``m = i - k``.

    Example:
        >>> from equinet.ops import spherical_harmonics
        >>> r = torch.randn(5, 3)
        >>> d = edge_wigner_D(2, r)
        >>> (d[2] @ spherical_harmonics(2, r)[:, 4:9, None]).squeeze(-1)   # ≈ [0, 0, sqrt(5), 0, 0] per edge
    """
    _check_l_max(l_max)
    if edge_vec.dim() != 2 or edge_vec.shape[-1] != 3:
        raise ValueError(f"edge_vec must have shape [E, 3], got {tuple(edge_vec.shape)}")
    if m_max is None:
        m_max = l_max
    if not isinstance(m_max, int) or m_max < 0:
        raise ValueError(f"m_max must be a non-negative integer, got {m_max!r}")
    x, y, z = torch.nn.functional.normalize(edge_vec, dim=-1).unbind(-1)
    second_chart = y.abs() > _CHART_BOUNDARY
    # The second chart turns the edge by T first: (x, y, z) -> (x, -z, y).
    y, z = torch.where(second_chart, -z, y), torch.where(second_chart, y, z)
    sin_beta = torch.sqrt(x * x + z * z)  # >= 1/√2 in both charts
    cos_nb, sin_nb = _multiples(y, sin_beta, l_max)
    cos_na, sin_na = _multiples(z / sin_beta, x / sin_beta, l_max)
    beta_functions = torch.cat([cos_nb, sin_nb[:, 1:]], dim=-1)  # [E, 2 l_max + 1]
    in_second_chart = second_chart.nonzero().squeeze(-1)

    blocks = []
    for l in range(l_max + 1):
        k = min(l, m_max)
        matrices, turn = _chart_constants(l, k, edge_vec.dtype, edge_vec.device)
        functions = torch.cat([beta_functions[:, : l + 1], beta_functions[:, l_max + 1 : l_max + 1 + l]], dim=-1)
        b = (functions @ matrices).view(-1, 2 * k + 1, 2 * l + 1)  # K Z(-β) K^T, rows |m| <= k
        # Right factor Z(-α): column n becomes b[:, n] cos(nα) - b[:, -n] sin(nα).
        order = torch.arange(-l, l + 1, device=edge_vec.device)
        cos_a = cos_na[:, order.abs()]
        sin_a = sin_na[:, order.abs()] * order.sign().to(edge_vec.dtype)
        d = b * cos_a.unsqueeze(1) - b.flip(2) * sin_a.unsqueeze(1)
        if l > 0:
            d = d.index_copy(0, in_second_chart, d.index_select(0, in_second_chart) @ turn)
        blocks.append(d)
    return blocks
