"""The Gaunt products on the grid kernel (:mod:`.gaunt_grid`): the tensor product of
:class:`~equinet.ops.GauntTensorProduct` and the powers of
:class:`~equinet.ops.GauntManyBodyProduct` (``backend="triton"``).

Both are differentiable through the operator's own derivatives, to any order. Features are
in the Gaunt products' ``[N, C, D]`` layout (:class:`~equinet.ops.gaunt.layout.Layout`).
"""

from __future__ import annotations

import torch

from ...gaunt.matrices import bracket_matrices, cached_matrices, degree_selection, full_grid_transforms, lowered
from .gaunt_grid import gaunt_grid_product

__all__ = ["TritonGauntPowers", "TritonGauntProduct"]


def _matrices(builder, *args, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return cached_matrices(builder, *args, dtype=like.dtype, device=like.device)


class TritonGauntProduct:
    """The Gaunt product (or the bracket) of two features on the sphere grid."""

    differentiable = True  # the operator has its own derivatives

    def product(self, x1, x2, scale1, scale2, scale_out, layouts, bracket: bool, band_limit: int) -> torch.Tensor:
        """``x1 [N, dim1]``, ``x2 [N, dim2]`` (e3nn layout), per-component scales ``[C or 1, D]``,
        the three features' layouts and the grid's ``band_limit`` → ``[N, dim_out]``."""
        layout1, layout2, layout_out = layouts
        out = self._on_kernel(layout1.split(x1) * scale1, layout2.split(x2) * scale2, layouts, bracket, band_limit)
        return layout_out.merge(out * scale_out)

    @staticmethod
    def _on_kernel(a: torch.Tensor, b: torch.Tensor, layouts, bracket: bool, band_limit: int) -> torch.Tensor:
        """``a [N, C, D1]``, ``b [N, C or 1, D2]`` (weighted) → ``[N, C, D_out]``; the bracket as the
        sum of the three products ``(r x grad f1)_j d_j f2``, with ``j`` folded into the channels."""
        layout1, layout2, layout_out = layouts
        degrees2 = layout2.degrees
        if bracket:
            a = (a @ _matrices(bracket_matrices, layout1.degrees, like=a)[0]).unflatten(-1, (3, -1))  # [N, C, 3, D1]
            b = (b @ _matrices(bracket_matrices, degrees2, like=a)[1]).unflatten(-1, (3, -1))
            a, b, degrees2 = a.flatten(1, 2), b.expand(-1, layout1.channels, -1, -1).flatten(1, 2), lowered(degrees2)
        (s1, _), (s2, _), (_, a3) = (
            _matrices(full_grid_transforms, degrees, band_limit, like=a) for degrees in (layout1.degrees, degrees2, layout_out.degrees)
        )
        out = gaunt_grid_product(a, b, s1, s2, a3)
        return out.unflatten(1, (-1, 3)).sum(2) if bracket else out


class TritonGauntPowers:
    """The powers ``(1/4pi) int f^nu Y`` of :class:`~equinet.ops.GauntManyBodyProduct`, as Gaunt
    products ``f^nu = f^(nu-1) f``: each power is read at all degrees up to ``nu l_max`` (exact:
    ``f^nu`` has no higher ones), the last one at the output degrees only.

    Shapes: ``a [n, C, D_in]`` → ``[n, C, correlation, D_out]``.
    """

    def __init__(self, degrees_in: tuple[int, ...], degrees_out: tuple[int, ...], correlation: int):
        self.degrees_in, self.degrees_out, self.correlation = degrees_in, degrees_out, correlation

    def __call__(self, a: torch.Tensor) -> torch.Tensor:
        l_max, powers, power, degrees = max(self.degrees_in), [], a, self.degrees_in
        for order in range(1, self.correlation + 1):
            if order > 1:
                to = self.degrees_out if order == self.correlation else tuple(range(order * l_max + 1))
                band_limit = max(degrees) + l_max + max(to)
                (s1, _), (s2, _), (_, a3) = (_matrices(full_grid_transforms, d, band_limit, like=a) for d in (degrees, self.degrees_in, to))
                power, degrees = gaunt_grid_product(power, a, s1, s2, a3), to
            powers.append(power @ _matrices(degree_selection, degrees, self.degrees_out, like=a)[0])
        return torch.stack(powers, dim=-2)
