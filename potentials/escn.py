"""eSCN-style potential (Passaro & Zitnick, ICML 2023; the convolution of EquiformerV2).

Node features are ``C x (0e + 1o + 2e + ...)`` up to a high degree ``l_max``; messages are
SO(2) convolutions (:class:`~equinet.ops.SO2Convolution`): sender features rotated into
the frame of the edge, mixed across degrees for each ``|m| <= m_max`` with weights from a
radial MLP of the edge length, rotated back and summed at the receiver. Their cost grows
as ``m_max l_max^2`` per edge and channel instead of ``l_max^5`` to ``l_max^6`` for a CG
convolution of the same degrees. The Wigner matrices of the edges are computed once and
shared by all layers.

Each layer: a linear map of the node features, the SO(2) convolution (normalized by the
square root of the mean neighbour count), a linear map, the nonlinearity, an
element-dependent self-connection (added before a gate, after the S2 activation) and a
residual connection. The energy is read out from the scalars of the last layer.

**The nonlinearity is a polynomial S2 activation (default) or a gate, not eSCN's SiLU on
the sphere grid**, which is equivariant only up to the aliasing of the grid (SiLU of a
band-limited function is not band-limited; BENCHMARKS.md). The gate (SiLU on the scalars,
sigmoid gates from scalars on the other degrees, as in NequIP) is exactly equivariant for
any feature size. So is a polynomial on the sphere: ``f^2`` and ``f^3`` of a function of
degree ``l_max`` have degree at most ``3 l_max``, which a finite grid integrates exactly.
``nonlinearity: s2`` takes each
channel's function ``f`` to those powers on the grid and reads them back at every degree up
to ``l_max``, with learned weights per element, channel, power and degree
(:class:`~equinet.ops.GauntManyBodyProduct`, MACE's many-body product done as a Gaunt
product), then mixes the channels with a linear map. It raises the body order of each layer
as MACE's product does. The invariant size of the messages (their root mean square over
channels and components) is divided out before the powers and multiplied back after, so
the activation grows only linearly with the messages.

The learned energy of an atom without neighbours is not zero (the self-connection and
gate act on its element embedding); the base class subtracts it.
"""

from __future__ import annotations

from typing import Sequence

import torch
from e3nn import o3

from equinet.ops import FullyConnectedTensorProduct, GauntManyBodyProduct, Linear, SO2Convolution, edge_wigner_D

from .base import Potential
from .heads import tensorial_heads
from .blocks import RadialEmbedding, gate, in_edge_blocks, over_node_blocks, radial_network, summed_over_edge_blocks
from .registry import register_model

__all__ = ["ESCN"]

NONLINEARITIES = ("gate", "s2")


class _ESCNLayer(torch.nn.Module):
    """One interaction: ``[n, irreps_in] → [n, hidden]``."""

    def __init__(self, irreps_in, hidden, m_max, num_elements, num_basis, radial_hidden, avg_num_neighbors, nonlinearity):
        super().__init__()
        # "gate": SiLU and sigmoid gates; "s2": powers f, f^2, f^3 of each channel's spherical
        # function on the sphere grid (exact), mixed per element and degree, then a linear map.
        self.gate = gate(hidden) if nonlinearity == "gate" else None
        self.s2 = GauntManyBodyProduct(hidden, hidden, correlation=3, num_elements=num_elements) if nonlinearity == "s2" else None
        self.linear_post = Linear(hidden, hidden) if nonlinearity == "s2" else None
        activation_in = hidden if self.gate is None else self.gate.irreps_in
        self.linear_in = Linear(irreps_in, irreps_in)
        self.conv = SO2Convolution(irreps_in, hidden, m_max)
        self.radial = radial_network(num_basis, radial_hidden, self.conv.weight_numel)
        self.linear_out = Linear(hidden, activation_in)
        self.self_connection = FullyConnectedTensorProduct(irreps_in, o3.Irreps(f"{num_elements}x0e"), activation_in)
        self.residual = o3.Irreps(irreps_in) == hidden
        self.norm = avg_num_neighbors**-0.5
        self.l_max, self.m_max = hidden.lmax, m_max

    def _messages(self, x_in, edge_vec, edge_features, edge_index, num_receivers, wigner=None):
        if wigner is None:
            wigner = edge_wigner_D(self.l_max, edge_vec, self.m_max)
        return self.conv(x_in, edge_vec, self.radial(edge_features), edge_index, wigner, num_receivers)

    def forward(self, x, species, one_hot, edge_vec, edge_features, edge_index, wigner=None, edge_block=None, atom_block=None):
        """``wigner``: the edges' rotations, shared by the layers; ``None`` (with edge blocks)
        computes them block by block. ``atom_block``: the update's atom blocks
        (:func:`.blocks.over_node_blocks`; the S2 activation's sphere-grid values are many
        per atom)."""
        if wigner is None:
            messages = summed_over_edge_blocks(self._messages, self.linear_in(x), (edge_vec, edge_features), edge_index, edge_block)
        else:
            messages = self._messages(self.linear_in(x), edge_vec, edge_features, edge_index, x.shape[0], wigner)
        return over_node_blocks(self._update, (x, messages, species, one_hot), atom_block)

    def _update(self, x, messages, species, one_hot):
        """The atoms' features ``[n, irreps_in]`` and summed messages ``[n, hidden]`` → the
        layer's output ``[n, hidden]``."""
        if self.s2 is None:
            update = self.gate(self.linear_out(messages * self.norm) + self.self_connection(x, one_hot))
        else:  # as in MACE: powers of the messages only, the self-connection added after
            h = self.linear_out(messages * self.norm)
            size = (h.square().mean(dim=-1, keepdim=True) + 1e-6).sqrt()  # invariant
            update = self.linear_post(self.s2(h / size, species) * size) + self.self_connection(x, one_hot)
        return x + update if self.residual else update


@register_model("escn")
class ESCN(Potential):
    """eSCN-style potential with SO(2) convolutions.

    Args:
        statistics, cutoff, scale, shift: see :class:`~equinet.potentials.Potential`.
        num_channels: multiplicity of every irrep of the node features.
        l_max: highest degree of the node features (eSCN uses up to 6 or 8).
        m_max: highest ``|m|`` kept in the edge frame (eSCN: 2); ``m_max = l_max`` is the
            exact equivalent of a CG convolution with edge harmonics up to ``2 l_max``.
        num_layers: interaction layers.
        num_basis: Bessel functions of the radial embedding.
        envelope_p: exponent of the polynomial cutoff envelope.
        radial_hidden: hidden widths of the radial MLP.
        readout_hidden: width of the scalar readout MLP.
        nonlinearity: ``"s2"``, the exact polynomial S2 activation (see the module docstring),
            or ``"gate"`` (SiLU on the scalars, sigmoid gates on the other degrees), the only
            one before this key was added (model files without the key load with it).
        outputs: ``energy``, ``dipole``, ``polarizability`` (:mod:`.heads`, reading the last
            layer's features; a polarizability needs ``l_max >= 2``).

    Hidden irreps: ``num_channels x (0e + 1o + 2e + ...)`` up to ``l_max``.
    """

    backend_families = {"conv": ("so2",)}

    def __init__(
        self,
        statistics: dict,
        cutoff: float = 5.0,
        scale: float | str = "force_rms",
        shift: float | str = 0.0,
        num_channels: int = 32,
        l_max: int = 4,
        m_max: int = 2,
        num_layers: int = 2,
        num_basis: int = 8,
        envelope_p: int = 6,
        radial_hidden: Sequence[int] = (64,),
        readout_hidden: int = 16,
        nonlinearity: str = "s2",
        outputs: Sequence[str] = ("energy",),
    ):
        super().__init__(statistics, cutoff, scale, shift, outputs)
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"model.nonlinearity must be one of {', '.join(NONLINEARITIES)}, got {nonlinearity!r}")
        for key, value, least in (("num_channels", num_channels, 1), ("num_layers", num_layers, 1), ("l_max", l_max, 0), ("m_max", m_max, 0)):
            if not isinstance(value, int) or value < least:
                raise ValueError(f"model.{key} must be an integer >= {least}, got {value!r}")
        self.l_max, self.m_max = l_max, min(m_max, l_max)
        self.radial_embedding = RadialEmbedding(cutoff, num_basis, envelope_p)
        hidden = o3.Irreps([(num_channels, (l, (-1) ** l)) for l in range(l_max + 1)])
        self.embedding = Linear(f"{self.num_elements}x0e", f"{num_channels}x0e")
        layers, irreps = [], o3.Irreps(f"{num_channels}x0e")
        for _ in range(num_layers):
            layers.append(
                _ESCNLayer(
                    irreps, hidden, self.m_max, self.num_elements, num_basis, radial_hidden, self.avg_num_neighbors, nonlinearity,
                )
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
        # Per edge of a block: the Wigner blocks, the radial MLP's activations and weights, the
        # rotated features and messages (about 4 x the hidden width); x2 for the recomputed
        # forward and its gradients.
        layer = self.layers[-1]
        wigner = sum(block.numel() for block in edge_wigner_D(self.l_max, torch.ones(1, 3, dtype=self.atomic_energies.dtype), self.m_max))
        widths = sum(linear.weight.shape[-1] for linear in layer.radial)
        return 2 * (2 * widths + wigner + 5 * layer.conv.irreps_out.dim) * self.atomic_energies.element_size()

    def set_memory_budget(self, gigabytes: float) -> int | None:
        """Edge blocks as every model, and atom blocks for the layers' updates, whose S2
        activation holds each channel's values and powers at about ``2 (B + 1)^2`` grid
        points for the band limit ``B`` (a gate: a few times the hidden width), x2 for the
        recomputed forward and its gradients: a quarter of the budget."""
        block = super().set_memory_budget(gigabytes)
        layer = self.layers[-1]
        if layer.s2 is None:
            per_atom = 16 * layer.conv.irreps_out.dim
        else:
            per_atom = 8 * layer.s2.channels * 2 * (layer.s2.band_limit + 1) ** 2
        self.atom_block_size = max(64, int(0.25 * gigabytes * 2**30 / (per_atom * self.atomic_energies.element_size())))
        return block

    def node_terms_and_features(self, species, edge_vec, edge_index):
        one_hot = self.one_hot(species)
        edge_features = self.radial_embedding(edge_vec.norm(dim=-1))
        blocked = in_edge_blocks(self._edge_block, edge_index.shape[1])
        wigner = None if blocked else edge_wigner_D(self.l_max, edge_vec, self.m_max)
        x = self.embedding(one_hot)
        for layer in self.layers:
            x = layer(x, species, one_hot, edge_vec, edge_features, edge_index, wigner, self._edge_block, self._atom_blocks())
        return self.readout(x).squeeze(-1), [x]
