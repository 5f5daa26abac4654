"""Pieces that several potentials share: the radial embedding of edge lengths, the
radial network that turns it into per-edge tensor-product weights, and the gated
nonlinearity of NequIP-style layers."""

from __future__ import annotations

from typing import Sequence

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate

from equinet.ops import BesselBasis, PolynomialCutoff

__all__ = ["RadialEmbedding", "gate", "radial_network"]


class RadialEmbedding(torch.nn.Module):
    """Edge lengths → Bessel basis times a polynomial envelope (NequIP, MACE).

    Every feature and its first two derivatives vanish at the cutoff, so anything built
    from them without a bias (``radial_network``) switches an edge off smoothly.

    Shapes: ``r: [E]`` (Å) → ``[E, num_basis]``.
    """

    def __init__(self, cutoff: float, num_basis: int = 8, envelope_p: int = 6):
        super().__init__()
        self.basis = BesselBasis(cutoff, num_basis)
        self.envelope = PolynomialCutoff(cutoff, envelope_p)
        self.num_basis = num_basis

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.basis(r) * self.envelope(r).unsqueeze(-1)


def radial_network(num_basis: int, hidden: Sequence[int], num_weights: int) -> FullyConnectedNet:
    """e3nn's bias-free MLP with SiLU: ``[E, num_basis] → [E, num_weights]``, zero at zero."""
    return FullyConnectedNet([num_basis, *hidden, num_weights], torch.nn.functional.silu)


def gate(irreps_out: o3.Irreps) -> Gate:
    """Gate whose output is ``irreps_out``: SiLU on the even scalars, sigmoid gates on the rest."""
    scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l == 0])
    gated = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l > 0])
    gates = o3.Irreps([(gated.num_irreps, "0e")]) if gated else o3.Irreps("")
    return Gate(scalars, [torch.nn.functional.silu] * len(scalars), gates, [torch.sigmoid] * len(gates), gated)
