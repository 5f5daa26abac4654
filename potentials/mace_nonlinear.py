"""MACE's non-linear interaction (mace-torch's ``RealAgnosticResidualNonLinearInteractionBlock``,
the block of the MACE-MH foundation models).

Against the linear interaction of :mod:`.mace` it makes the messages element-aware and the
layer non-linear: each edge's radial features are joined by learned embeddings of its
sender's and its receiver's elements before an MLP with layer norms gives the convolution
weights and a neighbour density ``rho_i = sum_j tanh(f(e_ij)^2)``; the summed messages,
mixed linearly and divided by ``alpha + beta rho_i`` (both learned), plus a linear map of
the node features, pass a gate (SiLU on the scalars, sigmoid gates on the rest) and a last
linear map. The edges go in blocks in inference (:func:`.blocks.summed_over_edge_blocks`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from e3nn import o3

from equinet.ops import CGConvolution, Linear

from .blocks import gate, summed_over_edge_blocks

__all__ = ["NonLinearInteraction", "SharedSelfConnection", "layer_norm_mlp"]

DENSITY_HIDDEN = 64  # width of the density MLP's one hidden layer (fixed in mace-torch)


def layer_norm_mlp(sizes: Sequence[int]) -> torch.nn.Sequential:
    """``Linear → LayerNorm → SiLU`` per hidden layer, then a last ``Linear`` (all with
    biases): ``[..., sizes[0]] → [..., sizes[-1]]`` (mace-torch's ``RadialMLP``)."""
    layers = []
    for index, (width_in, width_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(width_in, width_out))
        if index < len(sizes) - 2:
            layers += [torch.nn.LayerNorm(width_out), torch.nn.SiLU()]
    return torch.nn.Sequential(*layers)


class SharedSelfConnection(Linear):
    """The self-connection of a non-linear layer: one linear map for every element.
    Called as the element-dependent ones are, ``(x, one_hot)``; ``one_hot`` is unused."""

    def forward(self, x: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
        return super().forward(x)


class NonLinearInteraction(torch.nn.Module):
    """Atomic basis A of one non-linear layer: ``[n, irreps_in] → [n, irreps_a]``.

    Args:
        irreps_in: node features in.
        irreps_edge: features the convolution reads (after a linear map of ``irreps_in``).
        irreps_sh: edge spherical harmonics.
        irreps_a: the atomic basis out (``C x (0e + 1o + ... + max_ell)``).
        num_basis: radial features per edge.
        radial_hidden: hidden widths of the weight MLP.
        num_elements: elements of the model; the embeddings have one row each.

    Call: ``x [n, irreps_in]``, ``species [n]``, ``edge_sh [E, irreps_sh]``,
    ``edge_features [E, num_basis]``, ``edge_scale [E]`` (multiplies each edge's weights and
    density: the cutoff envelope when the radial features have none, else ones),
    ``edge_index [2, E]``, ``edge_block`` (edges per block, or ``None``).
    """

    def __init__(self, irreps_in, irreps_edge, irreps_sh, irreps_a, num_basis: int, radial_hidden: Sequence[int], num_elements: int):
        super().__init__()
        elements = o3.Irreps(f"{num_elements}x0e")
        scalars = o3.Irreps(f"{o3.Irreps(irreps_in).count('0e')}x0e")
        self.source_embedding = Linear(elements, scalars)
        self.target_embedding = Linear(elements, scalars)
        self.linear_up = Linear(irreps_in, irreps_edge)
        self.conv = CGConvolution(irreps_edge, irreps_sh, irreps_out=irreps_a)
        width = num_basis + 2 * scalars.dim
        self.radial = layer_norm_mlp([width, *radial_hidden, self.conv.weight_numel])
        self.density = layer_norm_mlp([width, DENSITY_HIDDEN, 1])
        self.gate = gate(o3.Irreps(irreps_a))
        self.linear_residual = Linear(irreps_edge, self.gate.irreps_in)
        self.linear_messages = Linear(self.conv.irreps_out, self.gate.irreps_in)
        self.linear_out = Linear(irreps_a, irreps_a)
        self.alpha = torch.nn.Parameter(torch.tensor(20.0))
        self.beta = torch.nn.Parameter(torch.tensor(0.0))
        self.num_elements = num_elements

    def edge_bytes(self, like: torch.Tensor) -> int:
        """Bytes per edge of a block (as :func:`.blocks.conv_edge_bytes`): the MLPs'
        activations, the gathered features and the products, x2 for the recomputation."""
        widths = sum(layer.out_features for layer in self.radial if isinstance(layer, torch.nn.Linear)) + DENSITY_HIDDEN
        features = self.conv.irreps_in1.dim + 4 * self.conv.irreps_out.dim
        return 2 * (2 * widths + features) * like.element_size()

    def _messages(self, x_up, edge_sh, edge_features, edge_scale, edge_species, edge_index, num_receivers):
        """``[num_receivers, conv out + 1]``: the summed messages and, last, the neighbour density."""
        elements = torch.eye(self.num_elements, dtype=edge_features.dtype, device=edge_features.device)
        source, target = self.source_embedding(elements), self.target_embedding(elements)
        features = torch.cat([edge_features, source[edge_species[:, 0]], target[edge_species[:, 1]]], dim=-1)
        scale = edge_scale.unsqueeze(-1)
        messages = self.conv(x_up, edge_sh, self.radial(features) * scale, edge_index, num_receivers)
        edge_density = torch.tanh(self.density(features) ** 2) * scale
        density = edge_density.new_zeros(num_receivers, 1).index_add(0, edge_index[1], edge_density)
        return torch.cat([messages, density], dim=-1)

    def forward(self, x, species, edge_sh, edge_features, edge_scale, edge_index, edge_block=None):
        x_up = self.linear_up(x)
        edge_species = species[edge_index].T  # [E, 2]: sender's and receiver's element
        edge_inputs = (edge_sh, edge_features, edge_scale, edge_species)
        summed = summed_over_edge_blocks(self._messages, x_up, edge_inputs, edge_index, edge_block)
        messages, density = summed[:, :-1], summed[:, -1:]
        h = self.linear_messages(messages) / (self.beta * density + self.alpha) + self.linear_residual(x_up)
        return self.linear_out(self.gate(h))
