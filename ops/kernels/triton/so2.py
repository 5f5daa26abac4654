"""The SO(2) convolution (:class:`~equinet.ops.SO2Convolution`) on the Triton kernels of the
CG convolution.

Each of its three steps is a trilinear form of the shape that :mod:`.cg_tables` describes,
so it runs on the same ``torch.library`` operators (:mod:`.cg_ops`), with their kernels for
every derivative, and so to any order (force training differentiates twice):

=====================  ==================================  ===================  ===================  ==================
step                   ``x`` (gathered)                    ``y`` (per edge)     ``w`` (per edge)     output
=====================  ==================================  ===================  ===================  ==================
into the edge frame    node features at the sender         Wigner entries       1                    ``x̃ [E, R_in C]``
SO(2) map              ``x̃`` of the edge                   1                    the edge weights     ``ỹ [E, R_out C]``
back, summed           ``ỹ`` of the edge                   Wigner entries       1                    ``[N, irreps_out]``
=====================  ==================================  ===================  ===================  ==================

``x̃`` and ``ỹ`` hold the edge-frame rows (``R``: the kept ``|m|`` components of every
segment, in the order of ``SO2Convolution``: per segment m = 0, +1, -1, ..) of all channels,
row-major ``[row, channel]``. The Wigner entries are those of ``edge_wigner_D``'s matrices
(rows ``|m| <= min(l, m_max)``), flattened and concatenated over the degrees; the quarter
turn ``J`` of class -1 irreps and the ``1/sqrt(n)`` of the blocks are in the coefficients.
The ``1`` operands are stride-0 views of a single one. Node features enter and leave in the
kernels' ``ir_mul`` layout (:mod:`.layout`), permuted at the boundary.
"""

from __future__ import annotations

import math

import torch

from ...so2_blocks import SO2Blocks, frame_rows, wigner_entries, wigner_entry, wigner_entry_starts
from .cg_ops import cg_conv, csr_order
from .cg_tables import TABLE_NAMES, channel_alignment, trilinear_tables
from ..layout import inverse_permutation, ir_mul_columns

__all__ = ["TritonSO2"]

STEPS = ("rotate_in", "so2_map", "rotate_out")


class TritonSO2(torch.nn.Module):
    """The ``backend="triton"`` implementation behind :class:`~equinet.ops.SO2Convolution`.

    Built from the convolution's structure (``conv``: its :class:`~equinet.ops.so2_blocks.SO2Blocks`);
    holds the tables of the three steps as buffers.

    Shapes: ``node_feats [N, irreps_in.dim]``, ``wigner`` as ``edge_wigner_D(l >= l_max,
    edge_vec, m_max >= conv.m_max)``, ``edge_weights [E, weight_numel]``, ``edge_index [2, E]``,
    ``num_receivers`` (the rows that receivers index) → ``[num_receivers, irreps_out.dim]``. The kernels differentiate themselves: ``summed_messages`` (the
    reference's message sum, which other backends differentiate) is not used.
    """

    def __init__(self, conv: SO2Blocks):
        super().__init__()
        self.l_max, self.m_max = conv.l_max, conv.m_max
        channels = self.channels = conv.channels
        # The Wigner entries: rows |m| <= min(l, m_max) of D^l, all columns, l = 0 .. l_max.
        wigner_start = wigner_entry_starts(self.l_max, self.m_max)

        def entry(l: int, offset: int, column: int) -> int:
            """Column of the Wigner entries holding ``D^l[m = offset, column]``."""
            return wigner_entry(wigner_start, self.m_max, l, offset) + column

        def node_families(irreps):
            """``(start, mul)`` of every (segment, component) in the ``ir_mul`` layout, and their index."""
            families, index = [], {}
            for j, (mul, ir) in enumerate(irreps):
                for m in range(ir.dim):
                    index[j, m] = len(families)
                    families.append((irreps[:j].dim + m * mul, mul))
            return families, index

        def frame_row_index(ks):
            """Index of the edge-frame row ``t`` of segment ``j`` (``t < 2k + 1``) in x̃ or ỹ."""
            index = {}
            for j, k in enumerate(ks):
                for t in range(2 * k + 1):
                    index[j, t] = len(index)
            return index

        def frame_families(rows):
            return [(row * channels, channels) for row in range(len(rows))]

        rows_in, rows_out = frame_row_index(conv.k_in), frame_row_index(conv.k_out)
        nodes_in, node_in = node_families(conv.irreps_in)
        nodes_out, node_out = node_families(conv.irreps_out)
        no_weights = [(0, channels)]  # the stride-0 ones
        wigner_dim = wigner_start[-1]

        # Into the edge frame: x̃[j, t] = f_t sum_m D^l[offset_t, m] x[j, m].
        terms = []
        for j, (_, ir) in enumerate(conv.irreps_in):
            rows = frame_rows(ir, conv.k_in[j], lambda m: 1.0) or ([], [])
            for t, (offset, factor) in enumerate(zip(*rows)):
                for m in range(ir.dim):
                    terms.append((node_in[j, m], entry(ir.l, offset, m), 0, rows_in[j, t], factor))
        tables = {"rotate_in": trilinear_tables(nodes_in, frame_families(rows_in), no_weights, wigner_dim, terms)}

        # The SO(2) map: ỹ[o, m, ±] = 1/sqrt(n) sum_i w[block, o, i] x̃[i, m, ±].
        terms, weight_groups, produced = [], [], set()
        for m, outputs, inputs in conv.blocks:
            pair = 1 if m == 0 else 2
            for j_out in outputs:
                for j_in in inputs:
                    weight_groups.append((len(weight_groups) * channels, channels))
                    for p in range(pair):
                        t = 0 if m == 0 else 2 * m - 1 + p
                        terms.append((rows_in[j_in, t], 0, len(weight_groups) - 1, rows_out[j_out, t], 1 / math.sqrt(len(inputs))))
                        produced.add(rows_out[j_out, t])
        tables["so2_map"] = trilinear_tables(frame_families(rows_in), frame_families(rows_out), weight_groups, 1, terms)

        # Back to the global frame, summed at the receivers: out[j, m] = sum_t f_t D^l[offset_t, m] ỹ[j, t].
        terms = []
        for j, (_, ir) in enumerate(conv.irreps_out):
            rows = frame_rows(ir, conv.k_out[j], lambda m: 1.0)
            for t, (offset, factor) in enumerate(zip(*rows)):
                if rows_out[j, t] in produced:  # rows of ỹ that no block writes are zero
                    for m in range(ir.dim):
                        terms.append((rows_out[j, t], entry(ir.l, offset, m), 0, node_out[j, m], factor))
        tables["rotate_out"] = trilinear_tables(frame_families(rows_out), nodes_out, no_weights, wigner_dim, terms)

        for step in STEPS:
            for name in TABLE_NAMES:
                self.register_buffer(f"{step}_{name}", tables[step][name], persistent=False)
        r_in, r_out = len(rows_in) * channels, len(rows_out) * channels
        self._dims = {
            "rotate_in": [conv.irreps_in.dim, wigner_dim, channels, r_in, channels],
            "so2_map": [r_in, 1, conv.weight_numel, r_out, channels],
            "rotate_out": [r_out, wigner_dim, channels, conv.irreps_out.dim, channels],
        }
        for step in STEPS:
            self._dims[step].append(channel_alignment(tables[step]))
        self.register_buffer("in_columns", ir_mul_columns(conv.irreps_in), persistent=False)
        self.register_buffer("out_columns", inverse_permutation(ir_mul_columns(conv.irreps_out)), persistent=False)

    def _step(self, step: str, x, y, w, graph) -> torch.Tensor:
        tables = [getattr(self, f"{step}_{name}") for name in TABLE_NAMES]
        tables = [t.to(x.dtype) if t.is_floating_point() else t for t in tables]
        return cg_conv(x, y, w, graph, tables, self._dims[step])

    def forward(self, node_feats, wigner, edge_weights, edge_index, num_receivers, summed_messages=None):
        if not node_feats.dtype == edge_weights.dtype == wigner[0].dtype:
            raise ValueError(
                f"backend='triton' needs one dtype for all inputs, got {node_feats.dtype} (node_feats), "
                f"{edge_weights.dtype} (edge_weights) and {wigner[0].dtype} (edge vectors)"
            )
        sender, receiver = edge_index[0], edge_index[1]
        num_edges, num_nodes = sender.shape[0], node_feats.shape[0]
        entries = wigner_entries(wigner, self.l_max, self.m_max)
        ones = node_feats.new_ones(()).expand(num_edges, self.channels)
        # Edge-wise steps read and write row e at edge e; the sender and receiver orders of
        # the convolution serve the first and last steps' sums. Graphs as cg_ops.edge_graph's
        # (ends, both CSR orders, far ends in those orders), with identity orders written out.
        src, dst = sender.contiguous(), receiver.contiguous()
        (by_dst, ptr_dst), (by_src, ptr_src) = csr_order(dst, num_receivers), csr_order(src, num_nodes)
        rows = torch.arange(num_edges, device=sender.device, dtype=sender.dtype)
        ptr = torch.arange(num_edges + 1, device=sender.device, dtype=sender.dtype)
        node_feats = node_feats.index_select(1, self.in_columns)
        x = self._step("rotate_in", node_feats, entries, ones, [src, rows, rows, ptr, by_src, ptr_src, src, by_src])
        y = self._step("so2_map", x, ones[:, :1], edge_weights, [rows, rows, rows, ptr, rows, ptr, rows, rows])
        out = self._step("rotate_out", y, entries, ones, [rows, dst, by_dst, ptr_dst, rows, ptr, by_dst, dst])
        return out.index_select(1, self.out_columns)
