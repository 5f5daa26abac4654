"""Clebsch–Gordan tensor products on e3nn irreps.

* :class:`ChannelwiseTensorProduct` — the "uvu" product with external (per-edge)
  weights: channel u of input 1 meets input 2 (multiplicity 1 per irrep, e.g. edge
  spherical harmonics) and keeps its channel. One output segment per path.
* :class:`CGConvolution` — the message-passing convolution of NequIP and MACE:
  gather sender features, channel-wise product with the edge attributes and per-edge
  weights, sum at the receivers.
* :class:`FullyConnectedTensorProduct` and :class:`Linear` — e3nn's, re-exported: they
  are the right tool and e3nn is the reference.

Backends (``backend=``): ``"e3nn"`` is the reference (``e3nn.o3.TensorProduct`` and a
scatter); ``"torch"`` is ours: all paths leaving one input segment are computed at once
as ``bmm(x1, x2 @ C)`` against a stacked CG matrix, so a product costs a handful of large
operations instead of a few per path; ``"triton"`` runs fused GPU kernels
(:mod:`equinet.ops.kernels`): gather, product and sum at the receivers in one pass, with
no per-edge message tensor, differentiable to any order; ``"cueq"`` runs the same product
on cuEquivariance (:mod:`equinet.ops.kernels.cueq`, ``pip install 'equinet[cueq]'``): its
CUDA kernel with fused gather and scatter on a GPU, its PyTorch code on a CPU.

Normalization is e3nn's default ("component" irreps, "element" paths): every path is
scaled by ``sqrt(2 l_out + 1)``, so unit-variance inputs give unit-variance outputs.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from e3nn import o3
from e3nn.o3 import FullyConnectedTensorProduct, Linear

from .irreps import as_irreps
from .kernels import build, constants_only

__all__ = ["ChannelwiseTensorProduct", "CGConvolution", "FullyConnectedTensorProduct", "Linear"]


def _channelwise_paths(
    irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, filter_ir_out: Iterable[o3.Irrep] | None
) -> tuple[o3.Irreps, list[tuple[int, int, int]]]:
    """All allowed (i1, i2, ir_out) paths, sorted by output irrep.

    Returns the output irreps (one segment ``mul1 x ir_out`` per path) and the
    instructions ``(i1, i2, i_out)`` in the output order.
    """
    allowed = None if filter_ir_out is None else set(filter_ir_out)
    paths = []
    for i1, (mul1, ir1) in enumerate(irreps_in1):
        for i2, (_, ir2) in enumerate(irreps_in2):
            for ir_out in ir1 * ir2:
                if allowed is None or ir_out in allowed:
                    paths.append((ir_out, i1, i2, mul1))
    # Sorting groups equal output irreps together (as MACE does), so that a following
    # Linear sees contiguous blocks; the sort is stable, so ties keep input order.
    paths.sort(key=lambda path: path[0])
    irreps_out = o3.Irreps([(mul1, ir_out) for ir_out, _, _, mul1 in paths])
    instructions = [(i1, i2, i_out) for i_out, (_, i1, i2, _) in enumerate(paths)]
    return irreps_out, instructions


class _ChannelwiseTorch(torch.nn.Module):
    """Our implementation of the uvu product, optionally fused with gather and scatter.

    For each segment ``s`` of input 1 (``u`` channels of degree ``l1``), the CG
    coefficients of every path leaving it are stacked into ``C_s: [dim2, K_s * d1]``
    (``K_s`` = summed output dimensions), so that all its paths are one
    ``y = bmm((x2 @ C_s) [E, K_s, d1], x1_s [E, d1, u])``. The paths of a segment that
    reach the same output irrep are consecutive, in the output and in the weights, so
    their weights broadcast over ``y`` as a view, and they are summed at the receivers
    with one ``index_add_``. Channels stay last, so gathers and scatters move whole rows.
    """

    def __init__(self, irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, irreps_out: o3.Irreps, instructions):
        super().__init__()
        # Consecutive paths with the same input segment and output irrep form a group:
        # its weights are one contiguous chunk and its outputs one [count, dim] block.
        groups: list[list[int]] = []  # [i1, first i_out, count], in weight/output order
        for i_out, (i1, _, _) in enumerate(instructions):
            if groups and groups[-1][0] == i1 and irreps_out[groups[-1][1]].ir == irreps_out[i_out].ir:
                groups[-1][2] += 1
            else:
                groups.append([i1, i_out, 1])
        self._weight_sizes = [irreps_in1[i1].mul * count for i1, _, count in groups]
        self._in1_sizes = [mul * ir.dim for mul, ir in irreps_in1]
        self._num_outputs = len(irreps_out)

        self._segments: list[tuple[int, int, int]] = []  # (index in irreps_in1, mul, d1)
        self._groups: list[list[tuple[int, int, int, int]]] = []  # per segment: (first i_out, count, dim, chunk)
        for i1, (mul1, ir1) in enumerate(irreps_in1):
            own = [(chunk, first, count) for chunk, (j1, first, count) in enumerate(groups) if j1 == i1]
            if not own:
                continue
            paths = [i_out for _, first, count in own for i_out in range(first, first + count)]
            cg = torch.zeros(irreps_in2.dim, sum(irreps_out[i].ir.dim for i in paths), ir1.dim, dtype=torch.float64)
            k = 0
            for i_out in paths:
                ir2, ir_out = irreps_in2[instructions[i_out][1]].ir, irreps_out[i_out].ir
                start2 = irreps_in2[: instructions[i_out][1]].dim
                block = o3.wigner_3j(ir1.l, ir2.l, ir_out.l, dtype=torch.float64) * math.sqrt(ir_out.dim)
                cg[start2 : start2 + ir2.dim, k : k + ir_out.dim, :] = block.permute(1, 2, 0)
                k += ir_out.dim
            self.register_buffer(f"cg_{len(self._segments)}", cg.flatten(1).to(torch.get_default_dtype()), persistent=False)
            self._segments.append((i1, mul1, ir1.dim))
            self._groups.append([(first, count, irreps_out[first].ir.dim, chunk) for chunk, first, count in own])

    def forward(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor,
        weights: torch.Tensor,
        sender: torch.Tensor | None = None,
        receiver: torch.Tensor | None = None,
        num_receivers: int = 0,
    ) -> torch.Tensor:
        num_edges = x2.shape[0]
        # split/unbind rather than slicing: their backward assembles the gradient in
        # one pass instead of one zero-filled full-size tensor per slice.
        x1_segments = x1.split(self._in1_sizes, dim=1)
        weight_chunks = weights.split(self._weight_sizes, dim=1)
        pieces: list[torch.Tensor | None] = [None] * self._num_outputs
        for index, (segment, mul, d1) in enumerate(self._segments):
            x = x1_segments[segment].reshape(-1, mul, d1).transpose(1, 2).contiguous()  # [N or E, d1, u]
            if sender is not None:
                x = x.index_select(0, sender)
            cg = getattr(self, f"cg_{index}")
            coupled = (x2 @ cg).view(num_edges, cg.shape[1] // d1, d1)  # [E, K, d1]; E may be 0
            y = torch.bmm(coupled, x)  # [E, K, u]
            groups = self._groups[index]
            for (first, count, width, chunk), y_group in zip(groups, y.split([c * w for _, c, w, _ in groups], dim=1)):
                w = weight_chunks[chunk].view(num_edges, count, 1, mul)
                message = y_group.view(num_edges, count, width, mul) * w
                if receiver is not None:
                    message = message.new_zeros(num_receivers, count, width, mul).index_add_(0, receiver, message)
                for path, piece in enumerate(message.unbind(1)):
                    pieces[first + path] = piece.transpose(1, 2).reshape(message.shape[0], -1)
        return torch.cat(pieces, dim=1)


class _ChannelwiseBase(torch.nn.Module):
    """Shared construction and input checks of the channel-wise product and convolution."""

    family = "cg"  # in the backend registry, equinet.ops.kernels

    def __init__(self, irreps_in1, irreps_in2, irreps_out=None, backend: str = "torch"):
        super().__init__()
        self.irreps_in1 = as_irreps(irreps_in1, "irreps_in1")
        self.irreps_in2 = as_irreps(irreps_in2, "irreps_in2")
        if any(mul != 1 for mul, _ in self.irreps_in2):
            raise ValueError(
                f"irreps_in2 must have multiplicity 1 per irrep (like spherical harmonics '1x0e+1x1o'), "
                f"got '{self.irreps_in2}'; use FullyConnectedTensorProduct for a multi-channel second input"
            )
        filter_ir_out = None if irreps_out is None else [ir for _, ir in as_irreps(irreps_out, "irreps_out")]
        self.irreps_out, self.instructions = _channelwise_paths(self.irreps_in1, self.irreps_in2, filter_ir_out)
        if not self.instructions:
            raise ValueError(
                f"no tensor-product path from '{self.irreps_in1}' x '{self.irreps_in2}' reaches any of "
                f"irreps_out '{irreps_out}'; widen irreps_out or raise the degrees of the inputs"
            )
        self.weight_numel = sum(self.irreps_in1[i1].mul for i1, _, _ in self.instructions)
        # Plain ints for the checks in forward: torch.compile cannot guard on e3nn's Irrep
        # (its __len__ raises), so forward must not read the Irreps.
        self._dim1, self._dim2 = self.irreps_in1.dim, self.irreps_in2.dim
        self.set_backend(backend)

    def set_backend(self, backend: str) -> None:
        """Compute with ``backend`` (see the class docstring) from now on: same weights, same
        result. The backend holds only constants of the irreps (the weights are inputs), which
        state dicts do not carry, so a model saved with one backend loads with any other."""
        description = (self.irreps_in1, self.irreps_in2, self.irreps_out, self.instructions)
        tp = build(self.family, backend, *description)
        self.tp = constants_only(_ChannelwiseTorch(*description) if tp is None else tp)
        self.backend = backend

    def _check(self, x1: torch.Tensor, x2: torch.Tensor, weights: torch.Tensor, name1: str, name2: str) -> None:
        if x1.shape[-1] != self._dim1:
            raise ValueError(
                f"{name1} has {x1.shape[-1]} features but irreps_in1 '{self.irreps_in1}' has dim "
                f"{self.irreps_in1.dim} (irreps_in2 is '{self.irreps_in2}')"
            )
        if x2.shape[-1] != self._dim2:
            raise ValueError(
                f"{name2} has {x2.shape[-1]} features but irreps_in2 '{self.irreps_in2}' has dim "
                f"{self.irreps_in2.dim} (irreps_in1 is '{self.irreps_in1}')"
            )
        if weights.shape != (x2.shape[0], self.weight_numel):
            raise ValueError(
                f"weights must have shape [{x2.shape[0]}, {self.weight_numel}] (one row per edge, "
                f"weight_numel columns), got {list(weights.shape)}"
            )

    def extra_repr(self) -> str:
        return (
            f"'{self.irreps_in1}' x '{self.irreps_in2}' -> '{self.irreps_out}', "
            f"{len(self.instructions)} paths, weight_numel={self.weight_numel}, backend={self.backend!r}"
        )


class ChannelwiseTensorProduct(_ChannelwiseBase):
    """Channel-wise ("uvu") CG tensor product with external weights.

    ``out[e, path, u, :] = sqrt(2 l_out + 1) * w[e, path, u] * C(l1, l2, l_out) . (x1[e, u] (x) x2[e])``

    Args:
        irreps_in1: irreps of the first input (e.g. node features ``64x0e+64x1o``).
        irreps_in2: irreps of the second input, multiplicity 1 each (e.g. ``SH(l<=3)``).
        irreps_out: allowed output irreps (multiplicities ignored); ``None`` keeps all paths.
        backend: ``"torch"`` (ours), ``"e3nn"`` (reference), ``"triton"`` (GPU kernels) or
            ``"cueq"`` (cuEquivariance).

    Attributes:
        irreps_out: one segment ``mul1 x ir_out`` per path, sorted by irrep.
        instructions: ``(i1, i2, i_out)`` per path, in output order.
        weight_numel: number of weights per row, path-major then channel.

    Shapes: ``x1: [E, irreps_in1.dim]``, ``x2: [E, irreps_in2.dim]``,
    ``weights: [E, weight_numel]`` → ``[E, irreps_out.dim]``.
    """

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        self._check(x1, x2, weights, "x1", "x2")
        if x1.shape[0] != x2.shape[0]:
            raise ValueError(f"x1 and x2 must have the same number of rows, got {x1.shape[0]} and {x2.shape[0]}")
        return self.tp(x1, x2, weights)


class CGConvolution(_ChannelwiseBase):
    """Message-passing CG convolution: gather → channel-wise TP with per-edge weights → sum at receivers.

    ``out[i] = sum_{e: receiver(e) = i} TP(node_feats[sender(e)], edge_attrs[e], edge_weights[e])``
    with the channel-wise product of :class:`ChannelwiseTensorProduct`.

    Args:
        irreps_node: irreps of the node features.
        irreps_edge: irreps of the edge attributes, multiplicity 1 each (spherical harmonics).
        irreps_out: allowed output irreps (multiplicities ignored); ``None`` keeps all paths.
        backend: ``"torch"`` (ours, fused gather/scatter), ``"e3nn"`` (reference),
            ``"triton"`` (one fused GPU kernel per pass, no ``[E, irreps_out.dim]`` messages)
            or ``"cueq"`` (cuEquivariance's kernel with its gather and scatter indices).

    Shapes: ``node_feats: [N, irreps_node.dim]``, ``edge_attrs: [E, irreps_edge.dim]``,
    ``edge_weights: [E, weight_numel]``, ``edge_index: [2, E]`` (row 0 senders, row 1
    receivers, torch_geometric's source → target) → ``[N, irreps_out.dim]``; with
    ``num_receivers`` → ``[num_receivers, irreps_out.dim]`` (receivers then index those rows,
    not ``node_feats``: a block of receivers sums into its own rows).
    """

    def __init__(self, irreps_node, irreps_edge, irreps_out=None, backend: str = "torch"):
        super().__init__(irreps_node, irreps_edge, irreps_out, backend)
        self.irreps_node = self.irreps_in1
        self.irreps_edge = self.irreps_in2

    def forward(
        self,
        node_feats: torch.Tensor,
        edge_attrs: torch.Tensor,
        edge_weights: torch.Tensor,
        edge_index: torch.Tensor,
        num_receivers: int | None = None,
    ) -> torch.Tensor:
        self._check(node_feats, edge_attrs, edge_weights, "node_feats", "edge_attrs")
        if edge_index.dim() != 2 or edge_index.shape != (2, edge_attrs.shape[0]):
            raise ValueError(
                f"edge_index must have shape [2, {edge_attrs.shape[0]}] (senders, receivers), "
                f"got {list(edge_index.shape)}"
            )
        rows = node_feats.shape[0] if num_receivers is None else num_receivers
        return self.tp(node_feats, edge_attrs, edge_weights, edge_index[0], edge_index[1], rows)
