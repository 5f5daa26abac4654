"""MACE's many-body product as powers of a spherical function (:class:`GauntManyBodyProduct`),
taken pointwise on a sphere grid."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..irreps import as_irreps
from .layout import Layout, gaunt_reachable, spherical_function
from .product import backend_engine
from .tensor_product import EXAMPLE
from .transforms import from_grid, to_grid

__all__ = ["GauntManyBodyProduct"]


def _power_variances(degrees_in: tuple[int, ...], degrees_out: tuple[int, ...], correlation: int) -> torch.Tensor:
    """``[correlation, n_out]``: variance per component of ``(1/4pi) int f^nu Y_LM`` for the
    Gaussian field ``f = (1/sqrt(D)) sum A_lm Y_lm``, A standard normal, float64.

    ``f`` has unit variance and correlation ``rho(t) = (1/D) sum_l (2l+1) P_l(t)`` between points
    at angle ``arccos t``; ``x^nu = sum_k c_k He_k(x)`` gives ``E[f^nu f'^nu] = sum_k c_k^2 k! rho^k``,
    and integrating over both points leaves ``(1/2) int_{-1}^1 E[f^nu f'^nu] P_L(t) dt``, a
    polynomial integral that Gauss–Legendre computes exactly.
    """
    dim = sum(2 * l + 1 for l in degrees_in)
    t, w = np.polynomial.legendre.leggauss(correlation * max(degrees_in) + max(degrees_out) + 2)
    rho = sum((2 * l + 1) * np.polynomial.legendre.Legendre.basis(l)(t) for l in degrees_in) / dim
    variances = np.zeros((correlation, len(degrees_out)))
    for order in range(1, correlation + 1):
        hermite = np.polynomial.hermite_e.poly2herme([0] * order + [1])
        moment = sum(c**2 * math.factorial(k) * rho**k for k, c in enumerate(hermite))
        for i, L in enumerate(degrees_out):
            variances[order - 1, i] = 0.5 * np.sum(w * moment * np.polynomial.legendre.Legendre.basis(L)(t))
    return torch.from_numpy(variances)


class GauntManyBodyProduct(torch.nn.Module):
    """MACE's many-body product as powers of a spherical function (the Gaunt replacement for
    :class:`~equinet.ops.SymmetricContraction`, same signature).

    For atom n of element z and channel c, with ``A[n, c]`` read as the function
    ``f(r) = (1/sqrt(D)) sum_l v[z, c, l] sum_m A[n, c, l, m] Y_lm(r)`` (``D`` = number of
    components, so unit-variance features give a unit-variance function),

        B[n, c, L, M] = sum_{nu=1..correlation} w[z, c, nu, L] k[nu, L] (1/4pi) int f^nu Y_LM dOmega,

    where the fixed ``k[nu, L]`` (buffer ``order_scale``) is zero where order nu cannot reach
    degree L with its parity, and otherwise gives each term, and their sum, a unit mean square
    per component when A and w are standard normal (exact, from the Hermite expansion of
    ``x^nu`` and the covariance of ``f``).

    ``f`` goes to one sphere grid once (exact for degree ``correlation * l_max + L_max``), its
    powers are taken pointwise and all of them are projected back in one matrix product. The
    product of ``nu`` copies of A couples through Gaunt coefficients only (paths with even
    degree sums), a subset of the symmetric contraction's couplings. ``B`` of an all-zero A is
    exactly zero.

    Args:
        irreps_in: ``C x (l_1 + l_2 + ...)``, each degree once, all with parity ``(-1)^l`` or all
            with ``-(-1)^l`` (e.g. ``64x0e+64x1o+64x2e+64x3o``).
        irreps_out: ``C x (L_1 + ...)`` with the same C, each degree once (e.g. ``64x0e+64x1o``).
            Order nu gives degree L the parity ``s^nu (-1)^L``, ``s = p_l (-1)^l`` of the input
            (so for ``0e+1o+2e+...`` inputs every output needs the parity ``(-1)^L``).
        correlation: highest power (MACE uses 3).
        num_elements: number of elements; every element has its own weights.

        backend: ``"torch"`` or ``"triton"``: the powers as a chain of Gaunt products on the
            grid kernel, ``f^nu = f^(nu-1) f`` read exactly at all degrees up to ``nu l_max``
            (:mod:`equinet.ops.kernels.triton.gaunt`); same weights, same result.

    Shapes: ``x: [n, irreps_in.dim]``, ``species: [n]`` (0..num_elements-1) → ``[n, irreps_out.dim]``.
    Weights: ``weight_in [num_elements, C, n_in]`` (start at 1) and
    ``weight_out [num_elements, C, correlation, n_out]`` (standard normal).
    """

    family = "gaunt_many_body"  # in the backend registry, equinet.ops.kernels

    def __init__(self, irreps_in, irreps_out, correlation: int, num_elements: int, backend: str = "torch"):
        super().__init__()
        self.irreps_in = as_irreps(irreps_in, "irreps_in", EXAMPLE)
        self.irreps_out = as_irreps(irreps_out, "irreps_out", EXAMPLE)
        channels, self.degrees_in, sign = spherical_function(self.irreps_in, "irreps_in", "64x0e+64x1o+64x2e")
        channels_out, self.degrees_out, _ = spherical_function(self.irreps_out, "irreps_out", "64x0e+64x1o", one_sign=False)
        if channels_out != channels:
            raise ValueError(f"irreps_out '{self.irreps_out}' must have the multiplicity {channels} of irreps_in '{self.irreps_in}'")
        if not isinstance(correlation, int) or correlation < 1:
            raise ValueError(f"correlation must be a positive integer, got {correlation!r}")
        if not isinstance(num_elements, int) or num_elements < 1:
            raise ValueError(f"num_elements must be a positive integer, got {num_elements!r}")
        self.channels, self.correlation, self.num_elements = channels, correlation, num_elements
        mask = torch.zeros(correlation, len(self.degrees_out))
        reachable = set(self.degrees_in)
        for order in range(1, correlation + 1):
            if order > 1:
                reachable = gaunt_reachable(reachable, self.degrees_in)
            for i, (_, ir) in enumerate(self.irreps_out):
                mask[order - 1, i] = float(ir.l in reachable and ir.p == sign**order * (-1) ** ir.l)
        for i, (_, ir) in enumerate(self.irreps_out):
            if not mask[:, i].any():
                raise ValueError(
                    f"no Gaunt product of up to {correlation} copies of '{self.irreps_in}' reaches {ir} "
                    f"(order nu gives degree L the parity {'' if sign > 0 else '(-1)^nu '}(-1)^L); "
                    "change irreps_out or raise the correlation or the degrees of irreps_in"
                )
        variances = _power_variances(self.degrees_in, self.degrees_out, correlation)
        # Unit mean square per order, and for the sum of the orders that reach a degree
        # (as e3nn normalizes a sum of paths), with standard-normal weights.
        scale = torch.where(mask > 0, 1 / (variances * mask.sum(0)).clamp(min=1e-300).sqrt(), 0.0)
        self.register_buffer("order_scale", scale.to(torch.get_default_dtype()), persistent=False)
        self.layout_in, self.layout_out = Layout(self.irreps_in, self.degrees_in), Layout(self.irreps_out, self.degrees_out)
        self.band_limit = correlation * max(self.degrees_in) + max(self.degrees_out)
        self.normalization = 1 / math.sqrt(self.layout_in.dim)
        self.weight_in = torch.nn.Parameter(torch.ones(num_elements, channels, len(self.degrees_in)))
        self.weight_out = torch.nn.Parameter(torch.randn(num_elements, channels, correlation, len(self.degrees_out)))
        self.set_backend(backend)

    def set_backend(self, backend: str) -> None:
        """Compute with ``backend`` (see the class docstring) from now on: same weights, same result."""
        self.kernels = backend_engine(self.family, backend, self.degrees_in, self.degrees_out, self.correlation)
        self.backend = backend

    def forward(self, x: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.irreps_in.dim:
            raise ValueError(f"x has {x.shape[-1]} features but irreps_in '{self.irreps_in}' has dim {self.irreps_in.dim}")
        weight_in = (self.weight_in * self.normalization)[:, :, self.layout_in.degree]  # [Z, C, D]
        a = self.layout_in.split(x) * weight_in.index_select(0, species)  # [n, C, D]
        projected = self._powers(a) if self.kernels is None else self.kernels(a)  # [n, C, nu, D_out]
        weight_out = (self.weight_out * self.order_scale)[..., self.layout_out.degree]  # [Z, C, nu, D_out]
        out = (projected * weight_out.index_select(0, species)).sum(dim=2)
        return self.layout_out.merge(out)

    def _powers(self, a: torch.Tensor) -> torch.Tensor:
        """``(1/4pi) int f^nu Y`` ``[n, C, nu, D_out]`` of ``a [n, C, D_in]``, all powers on one grid."""
        even, odd = to_grid(a, self.degrees_in, self.band_limit)  # [n, C, P/2]
        # Powers need the values themselves: north and south (or one, if f is mirror-even).
        values = even if odd is None else torch.stack([even + odd, even - odd])
        powers = [values]
        for _ in range(self.correlation - 1):
            powers.append(powers[-1] * values)
        powers = torch.stack(powers, dim=-2)  # [(2,) n, C, nu, P/2]
        halves = (powers, None) if odd is None else ((powers[0] + powers[1]) / 2, (powers[0] - powers[1]) / 2)
        return from_grid(halves, self.degrees_out, self.band_limit)

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in} -> {self.irreps_out}, correlation={self.correlation}, num_elements={self.num_elements}, "
            f"backend={self.backend!r}"
        )
