"""Pieces that several potentials share: the radial embedding of edge lengths, the
radial network that turns it into per-edge tensor-product weights, the gated
nonlinearity of NequIP-style layers, and messages summed edge block by edge block."""

from __future__ import annotations

import bisect
import functools
from typing import Callable, NamedTuple, Sequence

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch.utils.checkpoint import checkpoint

from equinet.ops import BesselBasis, GaussianBasis, PolynomialCutoff

__all__ = [
    "RADIAL_BASES", "Parts", "RadialEmbedding", "conv_edge_bytes", "gate", "in_edge_blocks", "over_node_blocks", "radial_network",
    "receiver_blocks", "summed_over_edge_blocks",
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


def receiver_blocks(receiver: torch.Tensor, num_nodes: int, block_size: int) -> list[tuple[int, int]]:
    """Cut edges sorted by receiver into blocks that never split one atom's edges: per
    block, its edges and its receivers as counts, ``(edges, atoms)``; the blocks follow each
    other, their atoms tile ``0 .. num_nodes``. A block holds at most ``block_size`` edges,
    or one atom's edges where that atom alone has more.

    Shapes: ``receiver``: ``[E]``, non-decreasing.
    """
    if receiver.shape[0] > 1 and bool((receiver[1:] < receiver[:-1]).any()):
        raise ValueError("edges must be sorted by receiver to be summed in blocks (torch.argsort(edge_index[1], stable=True))")
    ptr = [0, *torch.bincount(receiver, minlength=num_nodes).cumsum(0).tolist()]  # atom i's edges: ptr[i] .. ptr[i + 1]
    blocks, first = [], 0
    while first < num_nodes:
        end = max(first + 1, bisect.bisect_right(ptr, ptr[first] + block_size, lo=first) - 1)
        blocks.append((ptr[end] - ptr[first], end - first))
        first = end
    return blocks


class Parts(NamedTuple):
    """A fixed number of contiguous parts of the edges (or atoms), whatever their number:
    blocks whose sizes are symbols of the edge (atom) count, for graphs traced once for any
    structure (:mod:`equinet.export`)."""

    count: int


def _part_sizes(total: int, count: int) -> list[int]:
    """``count`` near-equal sizes that sum to ``total`` (zeros where it is smaller), from
    bounds with no comparison (tensor_split's has one), so that a trace with a symbolic
    ``total`` holds no guard on its traced value."""
    bounds = [part * total // count for part in range(count + 1)]
    return [end - start for start, end in zip(bounds[:-1], bounds[1:])]


def _traceable_checkpoint(fn: Callable[..., torch.Tensor], *inputs) -> torch.Tensor:
    """``fn(*inputs)`` under activation checkpointing in a form ``make_fx`` traces: no RNG
    state (the models are deterministic), and no check that the recomputed sizes equal the
    first ones, which a trace cannot decide where they are data-dependent symbols (a
    product's atoms of each element)."""
    return checkpoint(fn, *inputs, use_reentrant=False, preserve_rng_state=False, determinism_check="none")


def in_edge_blocks(edge_block: int | Parts | None, num_edges: int) -> bool:
    """Whether :func:`summed_over_edge_blocks` cuts ``num_edges`` edges into blocks."""
    return isinstance(edge_block, Parts) or (edge_block is not None and num_edges > edge_block)


def summed_over_edge_blocks(
    messages: Callable[..., torch.Tensor], nodes: torch.Tensor, edge_inputs: Sequence[torch.Tensor], edge_index: torch.Tensor,
    edge_block: int | Parts | None,
) -> torch.Tensor:  # fmt: skip
    """``messages(nodes, *edge_inputs, edge_index, num_receivers)``, a sum over edges into
    ``[num_receivers, ...]`` that reads ``nodes`` at the senders (row 0 of ``edge_index``)
    only and sums at the receivers (row 1, indexing the output's rows), computed in edge
    blocks: about ``edge_block`` edges at a time (an int), or in ``edge_block.count`` parts
    (:class:`Parts`).

    With an int, edges must be sorted by receiver. Each block covers a range of atoms
    (:func:`receiver_blocks`), reads a table of its own senders' rows and sums into its own
    rows; the rows are concatenated. A block so costs its edges and atoms, never all atoms,
    and the backward sums the node gradients of all blocks once. With :class:`Parts`,
    see :func:`_summed_over_edge_parts`. Each block runs under activation checkpointing: its
    per-edge intermediates (radial weights, gathered features, products) are freed after
    its forward and recomputed block by block in the backward. ``None``, or no more edges
    than a block: one call.

    Shapes: ``nodes``: ``[n, ...]``; ``edge_inputs``: ``[E, ...]`` each; ``edge_index``:
    ``[2, E]`` → ``[n, ...]``.
    """
    num_nodes, num_edges = nodes.shape[0], edge_index.shape[1]
    if not in_edge_blocks(edge_block, num_edges):
        return messages(nodes, *edge_inputs, edge_index, num_nodes)
    if isinstance(edge_block, Parts):
        return _summed_over_edge_parts(messages, nodes, edge_inputs, edge_index, edge_block.count)
    blocks = receiver_blocks(edge_index[1], num_nodes, edge_block)
    sizes = [edges for edges, _ in blocks]
    senders, local_senders = zip(*(torch.unique(sender, return_inverse=True) for sender in edge_index[0].split(sizes)))
    # One gather for all blocks' sender tables, and split (not sliced) edge inputs: the
    # backward of each is then one pass, not a full-size gradient per block.
    tables = nodes.index_select(0, torch.cat(senders)).split([sender.shape[0] for sender in senders])
    pieces = zip(tables, local_senders, edge_index[1].split(sizes), *(tensor.split(sizes) for tensor in edge_inputs))
    parts, first = [], 0
    for (_, atoms), (table, sender, receiver, *inputs) in zip(blocks, pieces):
        local_index = torch.stack([sender, receiver - first])
        parts.append(checkpoint(messages, table, *inputs, local_index, atoms, use_reentrant=False))
        first += atoms
    return torch.cat(parts)


def _summed_over_edge_parts(
    messages: Callable[..., torch.Tensor], nodes: torch.Tensor, edge_inputs: Sequence[torch.Tensor], edge_index: torch.Tensor, count: int
) -> torch.Tensor:
    """:func:`summed_over_edge_blocks` in ``count`` contiguous parts of near-equal size (some
    empty where there are fewer edges), in any edge order and with no data-dependent step,
    so that a trace with a symbolic edge count holds ``count`` blocks: each part reads the
    whole ``nodes`` table at its senders and sums into all ``n`` rows, and the parts are
    added one after another."""
    num_nodes, sizes = nodes.shape[0], _part_sizes(edge_index.shape[1], count)
    pieces = zip(edge_index.split(sizes, dim=1), *(tensor.split(sizes) for tensor in edge_inputs))
    total = None
    for index, *inputs in pieces:
        part = _traceable_checkpoint(messages, nodes, *inputs, index, num_nodes)
        total = part if total is None else total + part
    return total


def conv_edge_bytes(conv, radial: FullyConnectedNet, like: torch.Tensor) -> int:
    """Bytes per edge of a block of a CG convolution with its radial network: the MLP's
    activations and weights, the gathered features, and the coupled spherical harmonics and
    products (about 4 x the message width); x2 for the recomputed forward and its gradients."""
    widths = sum(layer.weight.shape[-1] for layer in radial)  # hidden widths and the weights
    features = conv.irreps_in1.dim + 4 * conv.irreps_out.dim
    return 2 * (2 * widths + features) * like.element_size()


def over_node_blocks(
    fn: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]], node_inputs: Sequence[torch.Tensor], block: int | Parts | None
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """``fn(*node_inputs)`` for a function that acts on each atom alone (rows in, rows out:
    one tensor or a tuple of them), ``block`` atoms at a time (an int) or in ``block.count``
    parts (:class:`Parts`) under activation checkpointing, as
    :func:`summed_over_edge_blocks` does for edges. ``None``, or no more atoms than a
    block: one call."""
    num_nodes = node_inputs[0].shape[0]
    if block is None or (isinstance(block, int) and num_nodes <= block):
        return fn(*node_inputs)
    if isinstance(block, Parts):
        sizes, run = _part_sizes(num_nodes, block.count), _traceable_checkpoint
    else:
        sizes, run = block, functools.partial(checkpoint, use_reentrant=False)
    pieces = zip(*(tensor.split(sizes) for tensor in node_inputs))  # split: one backward pass, as above
    outputs = [run(fn, *inputs) for inputs in pieces]
    if isinstance(outputs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outputs))
    return torch.cat(outputs)
