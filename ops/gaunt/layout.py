"""Features of the Gaunt products: the form ``C x (l_1 + l_2 + ...)`` (each degree once, one
multiplicity), its checks, the degrees a product reaches, and :class:`Layout`, which moves a
feature between e3nn's layout and the products' ``[..., C, D]``."""

from __future__ import annotations

import math

import torch
from e3nn import o3

from .matrices import components

__all__ = ["Layout", "bracket_reachable", "gaunt_reachable", "spherical_function"]


def spherical_function(irreps: o3.Irreps, name: str, example: str, one_sign: bool = True) -> tuple[int, tuple[int, ...], int]:
    """Check that ``irreps`` is ``C x (l_1 + l_2 + ...)``, each degree once, and (if ``one_sign``)
    one parity sign; return ``(C, degrees, s)`` with ``s = p (-1)^l`` (+1 for spherical-harmonic
    parity) of its first irrep."""
    muls = {mul for mul, _ in irreps}
    degrees = tuple(ir.l for _, ir in irreps)
    signs = [ir.p * (-1) ** ir.l for _, ir in irreps]
    if len(irreps) == 0 or len(muls) != 1 or 0 in muls or len(set(degrees)) != len(degrees):
        raise ValueError(
            f"{name} '{irreps}' must have one multiplicity C for every irrep and each degree once (e.g. '{example}')"
        )
    if one_sign and len(set(signs)) != 1:
        raise ValueError(
            f"{name} '{irreps}' mixes parities: a Gaunt product needs every degree l with parity (-1)^l "
            "(0e+1o+2e+...) or every degree with parity -(-1)^l (0o+1e+2o+...)"
        )
    return muls.pop(), degrees, signs[0]


def gaunt_reachable(degrees_a, degrees_b) -> set[int]:
    """Degrees L with a Gaunt coefficient (l_a, l_b, L) that is not zero."""
    return {L for la in degrees_a for lb in degrees_b for L in range(abs(la - lb), la + lb + 1, 2)}


def bracket_reachable(degrees_a, degrees_b) -> set[int]:
    """Degrees L that the bracket of degrees l_a and l_b reaches: the odd paths, ``l_a + l_b + L`` odd."""
    return {L for la in degrees_a for lb in degrees_b for L in range(abs(la - lb) + 1, la + lb, 2)}


def _layout_index(irreps: o3.Irreps, degrees: tuple[int, ...]) -> torch.Tensor:
    """``index [C * D]``: for channel c and component k (module order), its position in e3nn's layout."""
    columns, _ = components(degrees)
    starts, position = {}, 0
    for mul, ir in irreps:
        starts[ir.l] = position
        position += mul * ir.dim
    channels = irreps[0].mul
    index = []
    for c in range(channels):
        for column in columns:
            l = math.isqrt(column)
            index.append(starts[l] + c * (2 * l + 1) + column - l * l)
    return torch.tensor(index)


def _degree_index(degrees: tuple[int, ...]) -> torch.Tensor:
    """For each component (module order), the position of its degree in ``degrees``."""
    columns, _ = components(degrees)
    return torch.tensor([degrees.index(math.isqrt(column)) for column in columns])


class Layout(torch.nn.Module):
    """Moves a ``C x (l_1 + l_2 + ...)`` feature between e3nn's layout ``[..., irreps.dim]`` and
    the module's ``[..., C, D]`` (per channel, components with ``l + m`` even first)."""

    def __init__(self, irreps: o3.Irreps, degrees: tuple[int, ...]):
        super().__init__()
        self.channels, self.dim, self.degrees = irreps[0].mul, irreps.dim // irreps[0].mul, degrees
        gather = _layout_index(irreps, degrees)
        self.register_buffer("gather", gather, persistent=False)
        self.register_buffer("scatter", torch.argsort(gather), persistent=False)
        self.register_buffer("degree", _degree_index(degrees), persistent=False)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(-1, self.gather).unflatten(-1, (self.channels, self.dim))

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(-2).index_select(-1, self.scatter)
