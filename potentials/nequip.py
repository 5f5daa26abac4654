"""NequIP-style potential (Batzner et al., Nat. Commun. 2022).

Each layer: a linear map of the node features, the CG convolution with the edge
spherical harmonics and radial-MLP weights (normalized by sqrt of the mean neighbour
count), a linear map to the gate's input, plus an element-dependent self-connection,
then a gated nonlinearity and a residual connection. The energy is read out from the
scalars of the last layer.
"""

from __future__ import annotations

from typing import Sequence

import torch
from e3nn import o3

from equinet.ops import CGConvolution, FullyConnectedTensorProduct, Linear, spherical_harmonics

from .base import Potential
from .heads import tensorial_heads
from .blocks import RadialEmbedding, conv_edge_bytes, gate, radial_network, summed_over_edge_blocks
from .registry import register_model

__all__ = ["NequIP"]


class _NequIPLayer(torch.nn.Module):
    """One interaction: ``[n, irreps_in] → [n, irreps_out]``."""

    def __init__(self, irreps_in, irreps_out, irreps_sh, num_elements, num_basis, radial_hidden, avg_num_neighbors):
        super().__init__()
        self.gate = gate(irreps_out)
        self.linear_in = Linear(irreps_in, irreps_in)
        self.conv = CGConvolution(irreps_in, irreps_sh, irreps_out=self.gate.irreps_in)
        self.radial = radial_network(num_basis, radial_hidden, self.conv.weight_numel)
        self.linear_out = Linear(self.conv.irreps_out, self.gate.irreps_in)
        self.self_connection = FullyConnectedTensorProduct(irreps_in, o3.Irreps(f"{num_elements}x0e"), self.gate.irreps_in)
        self.residual = o3.Irreps(irreps_in) == self.gate.irreps_out
        self.norm = avg_num_neighbors**-0.5

    def _messages(self, x_in, edge_sh, edge_features, edge_index, num_receivers):
        return self.conv(x_in, edge_sh, self.radial(edge_features), edge_index, num_receivers)

    def forward(self, x, one_hot, edge_sh, edge_features, edge_index, edge_block=None):
        messages = summed_over_edge_blocks(self._messages, self.linear_in(x), (edge_sh, edge_features), edge_index, edge_block)
        update = self.gate(self.linear_out(messages * self.norm) + self.self_connection(x, one_hot))
        return x + update if self.residual else update


@register_model("nequip")
class NequIP(Potential):
    """NequIP-style potential.

    Args:
        statistics, cutoff, scale, shift: see :class:`~equinet.potentials.Potential`.
        num_channels: multiplicity of every irrep of the hidden features.
        l_max: highest degree of the hidden features and of the edge spherical harmonics.
        num_layers: interaction layers.
        num_basis: Bessel functions of the radial embedding.
        envelope_p: exponent of the polynomial cutoff envelope.
        radial_hidden: hidden widths of the radial MLP.
        readout_hidden: width of the scalar readout MLP (and of the tensorial heads' gated readout).
        outputs: ``energy``, ``dipole``, ``polarizability`` (:mod:`.heads`, reading the last
            layer's features; a polarizability needs ``l_max >= 2``).

    Hidden irreps: ``num_channels x (0e + 1o + 2e + ...)`` up to ``l_max``.
    """

    backend_families = {"conv": ("cg",)}

    def __init__(
        self,
        statistics: dict,
        cutoff: float = 5.0,
        scale: float | str = "force_rms",
        shift: float | str = 0.0,
        num_channels: int = 32,
        l_max: int = 2,
        num_layers: int = 4,
        num_basis: int = 8,
        envelope_p: int = 6,
        radial_hidden: Sequence[int] = (64, 64),
        readout_hidden: int = 16,
        outputs: Sequence[str] = ("energy",),
    ):
        super().__init__(statistics, cutoff, scale, shift, outputs)
        for key, value, least in (("num_channels", num_channels, 1), ("num_layers", num_layers, 1), ("l_max", l_max, 0)):
            if not isinstance(value, int) or value < least:
                raise ValueError(f"model.{key} must be an integer >= {least}, got {value!r}")
        self.l_max = l_max
        self.radial_embedding = RadialEmbedding(cutoff, num_basis, envelope_p)
        irreps_sh = o3.Irreps.spherical_harmonics(l_max)
        hidden = o3.Irreps([(num_channels, (l, (-1) ** l)) for l in range(l_max + 1)])
        self.embedding = Linear(f"{self.num_elements}x0e", f"{num_channels}x0e")
        layers, irreps = [], o3.Irreps(f"{num_channels}x0e")
        for _ in range(num_layers):
            layers.append(
                _NequIPLayer(irreps, hidden, irreps_sh, self.num_elements, num_basis, radial_hidden, self.avg_num_neighbors)
            )
            irreps = hidden
        self.layers = torch.nn.ModuleList(layers)
        self.readout = torch.nn.Sequential(
            Linear(hidden, f"{readout_hidden}x0e"), torch.nn.SiLU(), Linear(f"{readout_hidden}x0e", "1x0e")
        )
        self.heads = tensorial_heads(self.outputs, [hidden], readout_hidden)

    @property
    def message_passing_steps(self) -> int:
        return len(self.layers)

    def edge_bytes(self) -> int:
        return conv_edge_bytes(max((layer.conv for layer in self.layers), key=lambda conv: conv.irreps_out.dim), self.layers[0].radial, self.atomic_energies)

    def node_terms_and_features(self, species, edge_vec, edge_index):
        one_hot = self.one_hot(species)
        edge_sh = spherical_harmonics(self.l_max, edge_vec)
        edge_features = self.radial_embedding(edge_vec.norm(dim=-1))
        x = self.embedding(one_hot)
        for layer in self.layers:
            x = layer(x, one_hot, edge_sh, edge_features, edge_index, self._edge_block)
        return self.readout(x).squeeze(-1), [x]
