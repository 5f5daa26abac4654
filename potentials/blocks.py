"""Pieces that several potentials share: the radial embedding of edge lengths and the
radial network that turns it into per-edge tensor-product weights."""

from __future__ import annotations

from typing import Sequence

import torch
from e3nn.nn import FullyConnectedNet

from equinet.ops import BesselBasis, PolynomialCutoff

__all__ = ["RadialEmbedding", "radial_network"]


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
