"""The channel-wise Gaunt tensor product (:class:`GauntTensorProduct`): the product of two
spherical functions, and their Poisson bracket for the outputs of the other parity (see
:mod:`equinet.ops.gaunt`)."""

from __future__ import annotations

import torch
from e3nn import o3

from ..irreps import as_irreps
from .layout import Layout, bracket_reachable, gaunt_reachable, spherical_function
from .matrices import fft_size, grid_size
from .product import GauntProduct, TorchEngine, backend_engine

__all__ = ["EXAMPLE", "GauntTensorProduct", "METHODS"]

METHODS = ("grid", "fft")
EXAMPLE = "8x0e+8x1o+8x2e"  # irreps of the form the Gaunt products take


class _OutputPart(torch.nn.Module):
    """The irreps of a product's output that one form makes (the Gaunt product, or the bracket),
    each degree once: their :class:`Layout` and, per component, the index of its irrep in the
    whole output (``weight_index``)."""

    def __init__(self, irreps_out: o3.Irreps, positions: list[int], bracket: bool):
        super().__init__()
        self.bracket, self.irreps = bracket, o3.Irreps([irreps_out[i] for i in positions])
        _, degrees, _ = spherical_function(self.irreps, "irreps_out", "16x0e+16x1o+16x1e+16x2e")
        self.layout = Layout(self.irreps, degrees)
        self.register_buffer("weight_index", torch.tensor(positions)[self.layout.degree], persistent=False)


class GauntTensorProduct(torch.nn.Module):
    """Channel-wise Gaunt tensor product with learnable per-degree weights.

    For each channel c, with ``f1_c = sum_l w1[c, l] sum_m x1[c, l, m] Y_lm`` (and ``f2`` alike),

        out[c, L, M] = w_out[c, L] (1/4pi) int f1_c f2_c Y_LM dOmega

    for the outputs of parity ``s1 s2 (-1)^L`` (the Gaunt paths, ``l1 + l2 + L`` even), and

        out[c, L, M] = w_out[c, L] (1/4pi) int {f1_c, f2_c} Y_LM dOmega

    for those of the other parity (the odd paths, e.g. ``1o x 1o -> 1e``, the cross product),
    with the bracket ``{f, g} = r . (grad f x grad g)`` of the functions' harmonic extensions.
    Both parities of a degree may be asked for (``16x1o+16x1e``): then every path of the CG
    product is coupled, with one weight per degree instead of one per path.

    Args:
        irreps_in1: ``C x (l_1 + l_2 + ...)``, each degree once, all with parity ``(-1)^l``
            or all with ``-(-1)^l`` (e.g. ``16x0e+16x1o+16x2e``).
        irreps_in2: the same form with multiplicity C (channel c meets channel c) or
            multiplicity 1 (one function, e.g. edge spherical harmonics, shared by all channels).
        irreps_out: ``C x (L_1 + ...)``, each irrep once; each must be reachable: parity
            ``s1 s2 (-1)^L`` with ``|l1 - l2| <= L <= l1 + l2`` and ``l1 + l2 + L`` even, or the
            other parity with ``|l1 - l2| < L < l1 + l2`` and ``l1 + l2 + L`` odd (see the module
            docstring).
        method: ``"grid"`` (sphere grid, default, faster) or ``"fft"`` (2D Fourier basis).
        backend: ``"torch"`` or, with ``method="grid"``, ``"triton"`` (one fused GPU kernel,
            :mod:`equinet.ops.kernels.triton.gaunt`; the bracket as three of its products) or
            ``"cpp"`` (one fused CPU kernel, compiled on first use,
            :mod:`equinet.ops.kernels.cpp.gaunt`); same weights, same result.

    Shapes: ``x1: [..., irreps_in1.dim]``, ``x2: [..., irreps_in2.dim]`` (same leading
    shape) → ``[..., irreps_out.dim]``, in e3nn's layout. Weights ``weight_in1 [C, n1]``,
    ``weight_in2 [C or 1, n2]``, ``weight_out [C, n_out]`` (one per irrep, in irreps order)
    start at 1, so a fresh module is the plain Gaunt product. ``band_limit`` is
    ``l1_max + l2_max + L_max``; ``grid_size`` (grid) or ``fft_size`` (fft) the points used.
    The bracket costs about twice the Gaunt product (three derivatives of each input on the grid).

    Example:
        >>> tp = GauntTensorProduct("8x0e+8x1o+8x2e", "0e+1o+2e", "8x0e+8x1o+8x2e")
        >>> tp(tp.irreps_in1.randn(10, -1), tp.irreps_in2.randn(10, -1)).shape
        torch.Size([10, 72])
    """

    family = "gaunt"  # in the backend registry, equinet.ops.kernels

    def __init__(self, irreps_in1, irreps_in2, irreps_out, method: str = "grid", backend: str = "torch"):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        self.method = method
        self.irreps_in1 = as_irreps(irreps_in1, "irreps_in1", EXAMPLE)
        self.irreps_in2 = as_irreps(irreps_in2, "irreps_in2", EXAMPLE)
        self.irreps_out = as_irreps(irreps_out, "irreps_out", EXAMPLE)
        channels, self.degrees1, sign1 = spherical_function(self.irreps_in1, "irreps_in1", "16x0e+16x1o+16x2e")
        channels2, self.degrees2, sign2 = spherical_function(self.irreps_in2, "irreps_in2", "16x0e+16x1o or 1x0e+1x1o")
        if len(self.irreps_out) == 0 or {mul for mul, _ in self.irreps_out} != {channels} or channels2 not in (channels, 1):
            raise ValueError(
                f"irreps_in2 '{self.irreps_in2}' must have multiplicity {channels} (channel-wise) or 1 (shared), and "
                f"irreps_out '{self.irreps_out}' multiplicity {channels}, as irreps_in1 '{self.irreps_in1}'"
            )
        self.degrees_out = tuple(ir.l for _, ir in self.irreps_out)
        gaunt, bracket = gaunt_reachable(self.degrees1, self.degrees2), bracket_reachable(self.degrees1, self.degrees2)
        positions = {False: [], True: []}  # irreps_out indices made by the Gaunt product, by the bracket
        for i, (_, ir) in enumerate(self.irreps_out):
            odd = ir.p != sign1 * sign2 * (-1) ** ir.l
            if ir.l not in (bracket if odd else gaunt):
                paths = "|l1 - l2| < L < l1 + l2 with l1 + l2 + L odd" if odd else "|l1 - l2| <= L <= l1 + l2 with l1 + l2 + L even"
                raise ValueError(
                    f"irreps_out has {ir}, which the product of '{self.irreps_in1}' and '{self.irreps_in2}' does not "
                    f"reach: it needs input degrees with {paths}; reachable: {self._reachable(gaunt, bracket, sign1 * sign2)}"
                )
            positions[odd].append(i)
        self.parts = torch.nn.ModuleList(_OutputPart(self.irreps_out, p, odd) for odd, p in positions.items() if p)
        # The parts' outputs side by side → e3nn's order of irreps_out.
        offset, starts = 0, {}
        for part_positions in positions.values():
            for i in part_positions:
                starts[i], offset = offset, offset + self.irreps_out[i].dim
        order = torch.cat([torch.arange(starts[i], starts[i] + self.irreps_out[i].dim) for i in range(len(self.irreps_out))])
        self.register_buffer("order", order, persistent=False)
        self.channels = channels
        self.layout1, self.layout2 = Layout(self.irreps_in1, self.degrees1), Layout(self.irreps_in2, self.degrees2)
        self.weight_in1 = torch.nn.Parameter(torch.ones(channels, len(self.degrees1)))
        self.weight_in2 = torch.nn.Parameter(torch.ones(channels2, len(self.degrees2)))
        self.weight_out = torch.nn.Parameter(torch.ones(channels, len(self.degrees_out)))
        self.band_limit = max(self.degrees1) + max(self.degrees2) + max(self.degrees_out)
        if method == "grid":
            self.grid_size = grid_size(self.band_limit)  # (theta, phi) points
        else:
            self.fft_size = fft_size(self.degrees1, self.degrees2, self.degrees_out)
        self.set_backend(backend)

    def set_backend(self, backend: str) -> None:
        """Compute with ``backend`` (see the class docstring) from now on: same weights, same result."""
        kernels = backend_engine(self.family, backend)
        if backend != "torch" and self.method != "grid":
            raise ValueError(f"backend={backend!r} runs the sphere grid: it needs method='grid', not {self.method!r}")
        self.kernels = TorchEngine() if kernels is None else kernels
        self.backend = backend

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        if x1.shape[-1] != self.irreps_in1.dim or x2.shape[-1] != self.irreps_in2.dim:
            raise ValueError(
                f"inputs have {x1.shape[-1]} and {x2.shape[-1]} features but irreps_in1 '{self.irreps_in1}' and "
                f"irreps_in2 '{self.irreps_in2}' have dims {self.irreps_in1.dim} and {self.irreps_in2.dim}"
            )
        if x1.shape[:-1] != x2.shape[:-1]:
            raise ValueError(f"x1 {tuple(x1.shape)} and x2 {tuple(x2.shape)} must have the same leading shape")
        scale1 = self.weight_in1[:, self.layout1.degree]  # [C, D1], per component
        scale2 = self.weight_in2[:, self.layout2.degree]  # [C or 1, D2]
        batch = x1.shape[:-1]
        x1, x2 = x1.reshape(-1, x1.shape[-1]), x2.reshape(-1, x2.shape[-1])
        outs = []
        for part in self.parts:
            scale_out = self.weight_out[:, part.weight_index]  # [C, D_part]
            layouts = (self.layout1, self.layout2, part.layout)
            if self.kernels.differentiable:
                outs.append(self.kernels.product(x1, x2, scale1, scale2, scale_out, layouts, part.bracket, self.band_limit))
            else:
                outs.append(
                    GauntProduct.apply(x1, x2, scale1, scale2, scale_out, layouts, self.method, part.bracket, self.kernels)
                )
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1).index_select(-1, self.order)
        return out.view(*batch, self.irreps_out.dim)

    @staticmethod
    def _reachable(gaunt: set[int], bracket: set[int], sign: int) -> str:
        """The irreps the product can make, e.g. ``0e+1o+1e+2e+2o``."""
        irreps = [o3.Irrep(L, sign * (-1) ** L) for L in gaunt] + [o3.Irrep(L, -sign * (-1) ** L) for L in bracket]
        return "+".join(str(ir) for ir in sorted(irreps, key=lambda ir: (ir.l, -ir.p * (-1) ** ir.l)))

    def extra_repr(self) -> str:
        return f"{self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out}, method={self.method!r}, backend={self.backend!r}"
