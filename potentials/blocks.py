"""Pieces that several potentials share: the radial embedding of edge lengths, the
radial network that turns it into per-edge tensor-product weights, the gated
nonlinearity of NequIP-style layers, and messages summed edge block by edge block."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch.utils.checkpoint import checkpoint

from equinet.ops import BesselBasis, GaussianBasis, PolynomialCutoff

from . import looped
from .looped import Looped

__all__ = [
    "RADIAL_BASES", "RadialEmbedding", "conv_edge_bytes", "gate", "in_edge_blocks", "over_node_blocks", "radial_network",
    "summed_over_edge_blocks",
]  # fmt: skip

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
        envelope_on_basis: ``False`` leaves the envelope off (it is then applied to what is
            computed from the features, as MACE-MH's ``apply_cutoff=False`` does).

    Shapes: ``r: [E]`` (Å), ``radius_sum: [E]`` (Å, with a transform only) → ``[E, num_basis]``.
    """

    def __init__(self, cutoff: float, num_basis: int = 8, envelope_p: int = 6, basis: str = "bessel", transform=None, envelope_on_basis: bool = True):
        super().__init__()
        if basis not in RADIAL_BASES:
            raise ValueError(f"model.radial_basis must be one of {', '.join(RADIAL_BASES)}, got {basis!r}")
        self.basis = RADIAL_BASES[basis](cutoff, num_basis)
        self.envelope = PolynomialCutoff(cutoff, envelope_p)
        self.transform = transform
        self.num_basis = num_basis
        self.envelope_on_basis = envelope_on_basis

    def forward(self, r: torch.Tensor, radius_sum: torch.Tensor | None = None) -> torch.Tensor:
        x = r if self.transform is None else self.transform(r, radius_sum)
        basis = self.basis(x)
        return basis * self.envelope(r).unsqueeze(-1) if self.envelope_on_basis else basis


def radial_network(num_basis: int, hidden: Sequence[int], num_weights: int) -> FullyConnectedNet:
    """e3nn's bias-free MLP with SiLU: ``[E, num_basis] → [E, num_weights]``, zero at zero."""
    return FullyConnectedNet([num_basis, *hidden, num_weights], torch.nn.functional.silu)


def gate(irreps_out: o3.Irreps) -> Gate:
    """Gate whose output is ``irreps_out``: SiLU on the even scalars, sigmoid gates on the rest."""
    scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l == 0])
    gated = o3.Irreps([(mul, ir) for mul, ir in irreps_out if ir.l > 0])
    gates = o3.Irreps([(gated.num_irreps, "0e")]) if gated else o3.Irreps("")
    return Gate(scalars, [torch.nn.functional.silu] * len(scalars), gates, [torch.sigmoid] * len(gates), gated)


def in_edge_blocks(edge_block: int | Looped | None, num_edges: int) -> bool:
    """Whether :func:`summed_over_edge_blocks` cuts ``num_edges`` edges into blocks."""
    return isinstance(edge_block, Looped) or (edge_block is not None and num_edges > edge_block)


def summed_over_edge_blocks(
    messages: Callable[..., torch.Tensor], nodes: torch.Tensor, edge_inputs: Sequence[torch.Tensor], edge_index: torch.Tensor,
    edge_block: int | Looped | None,
) -> torch.Tensor:  # fmt: skip
    """``messages(nodes, *edge_inputs, edge_index, num_receivers)``, a sum over edges into
    ``[num_receivers, ...]`` that reads ``nodes`` at the senders (row 0 of ``edge_index``)
    only and sums at the receivers (row 1, indexing the output's rows), computed in edge
    blocks: about ``edge_block`` edges at a time (an int), or, in a graph traced for
    export, ``edge_block.edges`` at a time in a loop of the graph (:class:`.looped.Looped`).

    Each block is a range of edges: it reads a table of its own senders' rows and sums
    into the rows of its first to last receiver, so edges sorted by receiver keep a block's
    rows few. Its per-edge intermediates (radial weights, gathered features, products) are
    freed after its forward and recomputed block by block in the backward, which adds each
    block's gradients into one gradient of ``nodes`` (:mod:`.looped`). ``None``, or no more
    edges than a block: one call.

    Shapes: ``nodes``: ``[n, ...]``; ``edge_inputs``: ``[E, ...]`` each; ``edge_index``:
    ``[2, E]`` → ``[n, ...]``.
    """
    num_nodes, num_edges = nodes.shape[0], edge_index.shape[1]
    if not in_edge_blocks(edge_block, num_edges):
        return messages(nodes, *edge_inputs, edge_index, num_nodes)
    if isinstance(edge_block, Looped):
        return looped.edge_sum(messages, nodes, edge_inputs, edge_index, edge_block.edges)
    return looped.eager_edge_sum(messages, nodes, edge_inputs, edge_index, edge_block)


def conv_edge_bytes(conv, radial: FullyConnectedNet, like: torch.Tensor) -> int:
    """Bytes per edge of a block of a CG convolution with its radial network: the MLP's
    activations and weights, the gathered features, and the coupled spherical harmonics and
    products (about 4 x the message width); x2 for the recomputed forward and its gradients."""
    widths = sum(layer.weight.shape[-1] for layer in radial)  # hidden widths and the weights
    features = conv.irreps_in1.dim + 4 * conv.irreps_out.dim
    return 2 * (2 * widths + features) * like.element_size()


def over_node_blocks(
    fn: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]], node_inputs: Sequence[torch.Tensor], block: int | Looped | None
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """``fn(*node_inputs)`` for a function that acts on each atom alone (rows in, rows out:
    one tensor or a tuple of them), ``block`` atoms at a time (an int) under activation
    checkpointing, as :func:`summed_over_edge_blocks` does for edges, or, in a graph traced
    for export, ``block.atoms`` at a time in a loop of the graph (:class:`.looped.Looped`).
    ``None``, or no more atoms than a block: one call."""
    if isinstance(block, Looped):
        return fn(*node_inputs) if block.atoms is None else looped.atom_map(fn, node_inputs, block.atoms)
    if block is None or node_inputs[0].shape[0] <= block:
        return fn(*node_inputs)
    pieces = zip(*(tensor.split(block) for tensor in node_inputs))  # split: one backward pass, as above
    outputs = [checkpoint(fn, *inputs, use_reentrant=False) for inputs in pieces]
    if isinstance(outputs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outputs))
    return torch.cat(outputs)
