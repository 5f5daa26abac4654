"""TensorNet (Simeon & De Fabritiis, NeurIPS 2023), following TorchMD-Net 2.0's
``TensorNet`` with its ``Scalar`` output head, O(3) variant.

Atoms carry C channels of 3 x 3 Cartesian tensors ``X = I + A + S`` (see
:mod:`equinet.ops.cartesian`). With ``r_ij`` the edge j → i, ``r`` its length,
``e(r)`` the radial basis times the cutoff envelope ``phi(r)``:

* Embedding. ``Z_ij = W_pair [z_i, z_j]`` from element embeddings of both atoms,

      X_i = sum_j phi(r) Z_ij (f^I(e) 1 + f^A(e) [r̂]_x + f^S(e) (r̂ r̂^T - 1/3)),

  with f affine in e; then ``g = MLP(LayerNorm(|X_i|^2))`` scales each part after a
  channel mixing: ``X_i = g^I W^I I_i + g^A W^A A_i + g^S W^S S_i``.
* Interactions: :class:`~equinet.ops.TensorMessagePassing` with per-edge factors
  ``phi(r) MLP(e)`` (matrix products with the neighbours' tensors, normalized by
  ``|.|^2 + 1``, residual ``X + dX + dX^2``).
* Readout: ``LayerNorm([|I|^2, |A|^2, |S|^2])`` over 3C, a linear map to C, the
  activation, then TorchMD-Net's ``Scalar`` MLP (C → C/2 → 1).

The embedding's and each interaction's sums over edges are the only per-edge work. In
inference with edge blocks (:attr:`~.Potential.edge_block_size`) they go block by block
(:func:`.blocks.summed_over_edge_blocks`), each block computing its own edges' lengths,
envelope and radial features from ``edge_vec``, and the per-atom steps between them go
atom block by atom block (:attr:`~.Potential.atom_block_size`), so that neither keeps its
intermediates for all atoms.

Everything an edge contributes carries the envelope, which vanishes at the cutoff with
its first two derivatives, so energy, forces and their derivatives are continuous as
atoms cross it. An atom without neighbours has ``X = 0`` but its readout is not zero
(LayerNorm and biases), so the base class subtracts it: an isolated atom has its
reference energy.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from equinet.ops import (
    BesselBasis,
    CartesianLinear,
    EdgePairs,
    ExpNormalBasis,
    GaussianBasis,
    PolynomialCutoff,
    TensorMessagePassing,
    compose_tensor,
    decompose_tensor,
    frobenius_norm_squared,
    one_per_pair,
    per_edge,
    reverse_edge_pairs,
    scatter_outer,
    skew_symmetric,
    symmetric_traceless,
)

from .base import Potential
from .blocks import in_edge_blocks, over_node_blocks, summed_over_edge_blocks
from .registry import register_model

__all__ = ["TensorNet"]

ACTIVATIONS = {"silu": torch.nn.SiLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid, "gelu": torch.nn.GELU}


RADIAL_BASES = {
    "expnorm": ExpNormalBasis,
    "gaussian": GaussianBasis,
    "bessel": BesselBasis,
}


class _EdgeTerms(NamedTuple):
    """What the sums over edges read of the edges: the unit vectors r̂ ``[E, 3]``, and the
    envelope ``phi(r)`` ``[P]`` and radial features ``e(r)`` ``[P, num_rbf]`` of one edge
    per pair of ``pairs`` (``None``: of every edge, P = E)."""

    unit: torch.Tensor
    envelope: torch.Tensor
    features: torch.Tensor
    pairs: EdgePairs | None


class _TensorEmbedding(torch.nn.Module):
    """Element pairs and edge tensors → atomic tensors ``[n, C, 3, 3]``: :meth:`edge_sums`,
    the sum over edges, then ``forward``."""

    def __init__(self, num_elements: int, channels: int, num_rbf: int, activation):
        super().__init__()
        self.channels = channels
        self.element_embedding = torch.nn.Embedding(num_elements, channels)
        self.pair_embedding = torch.nn.Linear(2 * channels, channels)
        self.radial = torch.nn.Linear(num_rbf, 3 * channels)  # f^I, f^A, f^S
        self.norm = torch.nn.LayerNorm(channels)
        self.scalars = torch.nn.Sequential(
            torch.nn.Linear(channels, 2 * channels), activation(), torch.nn.Linear(2 * channels, 3 * channels), activation()
        )
        self.linear = CartesianLinear(channels, channels)

    def edge_sums(self, species, edges: _EdgeTerms, receiver_species, edge_index, num_receivers):
        """``sum_j phi(r) Z_ij (f^I(e), f^A(e) r̂, f^S(e) (r̂ r̂^T - 1/3))`` at each receiver,
        part by part in its fewest numbers: the identity part as a scalar, the skew part as
        its axial vector, the 9 entries of the symmetric traceless part (no ``[E, C, 3, 3]``
        tensors).

        Shapes: ``species``: ``[n_s]``, the senders' elements (row 0 of ``edge_index``
        indexes them); ``receiver_species``: ``[E]``; receivers (row 1) index the
        ``num_receivers`` rows of the output ``[num_receivers, 1 + 3 + 9, C]``.
        """
        sender, receiver = edge_index
        z = self.element_embedding
        pair = self.pair_embedding(torch.cat((z(receiver_species), z(species[sender])), dim=-1))
        pair = pair * per_edge(edges.envelope, edges.pairs).unsqueeze(-1)
        factors = per_edge(self.radial(edges.features), edges.pairs).view(-1, 3, self.channels) * pair.unsqueeze(1)  # [E, 3, C]
        f_i, f_a, f_s = factors.unbind(1)  # [E, C] each
        x_i = f_i.new_zeros(num_receivers, self.channels).index_add(0, receiver, f_i)
        x_a = scatter_outer(f_a, edges.unit, receiver, num_receivers)  # [n, 3, C]
        x_s = scatter_outer(f_s, symmetric_traceless(edges.unit).flatten(-2), receiver, num_receivers)  # [n, 9, C]
        return torch.cat((x_i.unsqueeze(1), x_a, x_s), dim=1)

    def forward(self, sums):
        """The edge sums ``[n, 13, C]`` (:meth:`edge_sums`) → ``X_i`` ``[n, C, 3, 3]``."""
        n, c = sums.shape[0], self.channels
        x_i, x_a, x_s = sums.split((1, 3, 9), dim=1)
        eye = torch.eye(3, dtype=sums.dtype, device=sums.device)
        identity = x_i.squeeze(1)[..., None, None] * eye
        x = compose_tensor(identity, skew_symmetric(x_a.transpose(1, 2)), x_s.transpose(1, 2).reshape(n, c, 3, 3))
        scales = self.scalars(self.norm(frobenius_norm_squared(x))).view(-1, 3, self.channels)
        parts = self.linear(*decompose_tensor(x))
        return compose_tensor(*(scales[:, k, :, None, None] * part for k, part in enumerate(parts)))


class _Interaction(torch.nn.Module):
    """Radial MLP for the per-edge factors, then TensorNet's message passing; the caller
    runs ``message_passing``'s three steps with :meth:`messages` as the sum over edges."""

    def __init__(self, channels: int, num_rbf: int, activation):
        super().__init__()
        self.channels = channels
        self.radial = torch.nn.Sequential(
            torch.nn.Linear(num_rbf, channels),
            activation(),
            torch.nn.Linear(channels, 2 * channels),
            activation(),
            torch.nn.Linear(2 * channels, 3 * channels),
            activation(),
        )
        self.message_passing = TensorMessagePassing(channels)

    def messages(self, y, edges: _EdgeTerms, edge_index, num_receivers):
        """``M_i`` ``[num_receivers, C, 3, 3]`` of the senders' ``Y_j`` ``[n_s, C, 3, 3]``
        (:meth:`~equinet.ops.TensorMessagePassing.summed_messages`) with the factors
        ``phi(r) MLP(e)``."""
        weights = per_edge(self.radial(edges.features) * edges.envelope.unsqueeze(-1), edges.pairs).view(-1, 3, self.channels)
        return self.message_passing.summed_messages(y, weights, edge_index, num_receivers)


@register_model("tensornet")
class TensorNet(Potential):
    """TensorNet: O(3)-equivariant Cartesian rank-2 tensor features.

    Args:
        statistics, cutoff, scale, shift: see :class:`~equinet.potentials.Potential`.
        hidden_channels: C, tensor channels per atom (also the width of the MLPs).
        num_layers: interaction layers (0 keeps only the embedding).
        num_rbf: radial basis functions.
        radial_basis: ``"expnorm"`` (TorchMD-Net's default), ``"gaussian"`` or ``"bessel"``.
        trainable_rbf: learn the parameters of the radial basis.
        envelope_p: exponent of the polynomial cutoff envelope (``PolynomialCutoff``);
            it replaces TorchMD-Net's cosine cutoff, whose second derivative jumps at the
            cutoff.
        activation: ``"silu"``, ``"tanh"``, ``"sigmoid"`` or ``"gelu"``.
    """

    # X = 0 without neighbours, but the readout of X = 0 is not zero.
    isolated_energy_is_zero = False
    default_lr = 1e-3  # at 0.01 its forces learn 3x slower on rMD17 (BENCHMARKS.md); TorchMD-Net also uses 1e-3

    def __init__(
        self,
        statistics: dict,
        cutoff: float = 5.0,
        scale: float | str = "force_rms",
        shift: float | str = 0.0,
        hidden_channels: int = 128,
        num_layers: int = 2,
        num_rbf: int = 32,
        radial_basis: str = "expnorm",
        trainable_rbf: bool = False,
        envelope_p: int = 6,
        activation: str = "silu",
    ):
        super().__init__(statistics, cutoff, scale, shift)
        if not isinstance(hidden_channels, int) or hidden_channels < 2:
            raise ValueError(f"model.hidden_channels must be an integer >= 2, got {hidden_channels!r}")
        if not isinstance(num_layers, int) or num_layers < 0:
            raise ValueError(f"model.num_layers must be a non-negative integer, got {num_layers!r}")
        if not isinstance(num_rbf, int) or num_rbf < 1:
            raise ValueError(f"model.num_rbf must be a positive integer, got {num_rbf!r}")
        if radial_basis not in RADIAL_BASES:
            raise ValueError(f"model.radial_basis must be one of {', '.join(RADIAL_BASES)}, got {radial_basis!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"model.activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        act = ACTIVATIONS[activation]
        channels = hidden_channels

        self.radial_basis = RADIAL_BASES[radial_basis](self.cutoff, num_rbf, trainable=trainable_rbf)
        self.envelope = PolynomialCutoff(self.cutoff, envelope_p)
        self.embedding = _TensorEmbedding(self.num_elements, channels, num_rbf, act)
        self.interactions = torch.nn.ModuleList(_Interaction(channels, num_rbf, act) for _ in range(num_layers))
        self.out_norm = torch.nn.LayerNorm(3 * channels)
        self.linear = torch.nn.Sequential(torch.nn.Linear(3 * channels, channels), act())
        self.readout = torch.nn.Sequential(torch.nn.Linear(channels, channels // 2), act(), torch.nn.Linear(channels // 2, 1))

    @property
    def message_passing_steps(self) -> int:
        return len(self.interactions) + 1  # the embedding sums over neighbours too

    def edge_bytes(self) -> int:
        # Per edge of an interaction's block (the embedding's needs less): the radial MLP's
        # activations and factors (15 C), their combinations (6 C), the gathered and scaled
        # entries of the senders' tensors (38 C, as a GPU forms them); x2 for the recomputed
        # forward and its gradients.
        return 2 * 59 * self.embedding.channels * self.atomic_energies.element_size()

    def set_memory_budget(self, gigabytes: float) -> int | None:
        """Edge blocks as every model, and atom blocks for the tensor updates (embedding,
        normalisation and Y, the update with its products, readout), whose intermediates
        (about 40 ``[C, 3, 3]`` tensors an atom, with the recomputed forward and its
        gradients) dwarf the features kept between them: a quarter of the budget."""
        block = super().set_memory_budget(gigabytes)
        per_atom = 40 * 9 * self.embedding.channels * self.atomic_energies.element_size()
        self.atom_block_size = max(64, int(0.25 * gigabytes * 2**30 / per_atom))
        return block

    def _edge_terms(self, edge_vec: torch.Tensor, pairs: EdgePairs | None) -> _EdgeTerms:
        r = edge_vec.norm(dim=-1)
        r_pairs = one_per_pair(r, pairs)
        envelope = self.envelope(r_pairs)
        return _EdgeTerms(edge_vec / r.unsqueeze(-1), envelope, self.radial_basis(r_pairs) * envelope.unsqueeze(-1), pairs)

    def _summed(self, messages, nodes, edge_inputs, edges, edge_vec, edge_index):
        """``messages(nodes, edges, *edge_inputs, edge_index, num_receivers)``, a sum over
        edges: at once with the terms ``edges`` of all edges, or, where ``edges`` is
        ``None``, edge block by edge block (:func:`.blocks.summed_over_edge_blocks`), each
        block computing its own edges' terms from its rows of ``edge_vec``."""
        if edges is not None:
            return messages(nodes, edges, *edge_inputs, edge_index, nodes.shape[0])

        def block(nodes, edge_vec, *inputs):  # inputs: the block's edge_inputs, edge_index, num_receivers
            return messages(nodes, self._edge_terms(edge_vec, None), *inputs)

        return summed_over_edge_blocks(block, nodes, (edge_vec, *edge_inputs), edge_index, self._edge_block)

    def node_energy_terms(self, species, edge_vec, edge_index):
        # In one pass the radial MLPs run once per edge and its reverse (same length): half
        # the edges. In edge blocks (inference) nothing as wide as the radial basis or the
        # channels exists for all edges at once, and an edge's reverse is often in another
        # block: the MLPs run once per edge.
        blocked = in_edge_blocks(self._edge_block, edge_index.shape[1])
        edges = None if blocked else self._edge_terms(edge_vec, reverse_edge_pairs(edge_index, edge_vec))
        atoms = self._atom_blocks()
        sums = self._summed(self.embedding.edge_sums, species, (species[edge_index[1]],), edges, edge_vec, edge_index)
        x = over_node_blocks(self.embedding, (sums,), atoms)
        for interaction in self.interactions:
            x, y = over_node_blocks(interaction.message_passing.node_tensors, (x,), atoms)
            m = self._summed(interaction.messages, y, (), edges, edge_vec, edge_index)
            x = over_node_blocks(interaction.message_passing.update, (x, y, m), atoms)
        return over_node_blocks(self._readout, (x,), atoms)

    def _readout(self, x: torch.Tensor) -> torch.Tensor:
        """Atomic tensors ``[n, C, 3, 3]`` → energy terms ``[n]``."""
        invariants = torch.cat([frobenius_norm_squared(part) for part in decompose_tensor(x)], dim=-1)  # [n, 3C]
        return self.readout(self.linear(self.out_norm(invariants))).squeeze(-1)
