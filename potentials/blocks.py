"""Pieces that several potentials share: the radial embedding of edge lengths, the
radial network that turns it into per-edge tensor-product weights, and the gated
nonlinearity of NequIP-style layers."""

from __future__ import annotations

from typing import Sequence

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate

from equinet.ops import BesselBasis, GaussianBasis, PolynomialCutoff

__all__ = ["RADIAL_BASES", "RadialEmbedding", "gate", "radial_network"]

RADIAL_BASES = {"bessel": BesselBasis, "gaussian": GaussianBasis}


class RadialEmbedding(torch.nn.Module):
    """Edge lengths → radial basis times a polynomial envelope (NequIP, MACE).

    Every feature and its first two derivatives vanish at the cutoff, so anything built
    from them without a bias (``radial_network``) switches an edge off smoothly. With a
    ``transform`` (:mod:`.pair_radii`: MACE's Agnesi or Soft), the basis reads the
    transformed length and the envelope the length itself.

    Args:
        cutoff: in Å.
        num_basis: functions of the basis.
        envelope_p: exponent of the polynomial envelope.
        basis: ``"bessel"`` (:class:`~equinet.ops.BesselBasis`) or ``"gaussian"``
            (:class:`~equinet.ops.GaussianBasis`, centres from 0 to the cutoff).
        transform: a module ``(r, radius_sum) → r'``, or ``None``.

    Shapes: ``r: [E]`` (Å), ``radius_sum: [E]`` (Å, with a transform only) → ``[E, num_basis]``.
    """

    def __init__(self, cutoff: float, num_basis: int = 8, envelope_p: int = 6, basis: str = "bessel", transform=None):
        super().__init__()
        if basis not in RADIAL_BASES:
            raise ValueError(f"model.radial_basis must be one of {', '.join(RADIAL_BASES)}, got {basis!r}")
        self.basis = RADIAL_BASES[basis](cutoff, num_basis)
        self.envelope = PolynomialCutoff(cutoff, envelope_p)
        self.transform = transform
        self.num_basis = num_basis

    def forward(self, r: torch.Tensor, radius_sum: torch.Tensor | None = None) -> torch.Tensor:
        x = r if self.transform is None else self.transform(r, radius_sum)
        return self.basis(x) * self.envelope(r).unsqueeze(-1)


def radial_network(num_basis: int, hidden: Sequence[int], num_weights: int) -> FullyConnectedNet:
    """e3nn's bias-free MLP with SiLU: ``[E, num_basis] → [E, num_weights]``, zero at zero."""
    return FullyConnectedNet([num_basis, *hidden, num_weights], torch.nn.functional.silu)


def gate(irreps_out: o3.Irreps) -> Gate:
    """Gate whose output is ``irreps_out``: SiLU on the even scalars, sigmoid gates on the rest."""
    scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l == 0])
    gated = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l > 0])
    gates = o3.Irreps([(gated.num_irreps, "0e")]) if gated else o3.Irreps("")
    return Gate(scalars, [torch.nn.functional.silu] * len(scalars), gates, [torch.sigmoid] * len(gates), gated)
