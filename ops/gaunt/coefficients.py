"""Gaunt coefficients: integrals of products of three real spherical harmonics."""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from e3nn import o3

from ..sh import spherical_harmonics

__all__ = ["gaunt_coefficients"]


@lru_cache(maxsize=None)
def _gaunt64(l1: int, l2: int, l3: int) -> torch.Tensor:
    if (l1 + l2 + l3) % 2 or not abs(l1 - l2) <= l3 <= l1 + l2:
        return torch.zeros(2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1, dtype=torch.float64)
    # G is invariant and the invariants of l1 x l2 x l3 form one line, spanned by the
    # Wigner-3j symbol C: G = alpha C with alpha = <C, G> / <C, C>, and
    # <C, G> = int sum C Y Y Y, whose integrand is rotation invariant, hence constant.
    c = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
    point = torch.tensor([0.48, -0.6, 0.64], dtype=torch.float64)  # any point of the unit sphere
    y = spherical_harmonics(max(l1, l2, l3), point)
    y1, y2, y3 = (y[l * l : (l + 1) ** 2] for l in (l1, l2, l3))
    invariant = torch.einsum("abc,a,b,c->", c, y1, y2, y3)
    return 4 * math.pi * invariant / c.square().sum() * c


def gaunt_coefficients(l1: int, l2: int, l3: int) -> torch.Tensor:
    """Gaunt coefficients ``G[m1, m2, m3] = int Y_l1m1 Y_l2m2 Y_l3m3 dOmega``.

    e3nn's real spherical harmonics with component normalization and e3nn's order of
    ``m``; zero unless ``l1 + l2 + l3`` is even and the triangle inequality holds.

    Returns:
        ``[2 l1 + 1, 2 l2 + 1, 2 l3 + 1]``, float64.

    Example:
        >>> gaunt_coefficients(0, 1, 1)[0] / (4 * math.pi)   # Y_0 = 1
        tensor([[1., 0., 0.], [0., 1., 0.], [0., 0., 1.]], dtype=torch.float64)
    """
    for l in (l1, l2, l3):
        if not isinstance(l, int) or l < 0:
            raise ValueError(f"degrees must be non-negative integers, got {(l1, l2, l3)!r}")
    return _gaunt64(l1, l2, l3).clone()
