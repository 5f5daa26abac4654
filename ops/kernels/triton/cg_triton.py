"""Triton kernels of the channel-wise CG convolution and their launchers.

Three kernels compute the four partial derivatives of the trilinear form described in
:mod:`equinet.ops.kernels.triton.cg_tables` (the ``conv`` and ``transpose`` tables share one
layout, hence one kernel):

* :func:`gather_product_scatter` — ``out[n] = sum_{i in CSR(n)} sum_j c * y[e_i] * w[e_i] * a[gather i]``,
  a segmented reduction over the edges of each output node (edges sorted by that node),
  so every output element is written exactly once: no atomics, no zero-filled buffer,
  deterministic, and no ``[E, Dout]`` message tensor.
* :func:`edge_attrs_contraction` — ``out[e, b] = sum_j c * sum_u x[src e] * w[e] * g[dst e]``.
* :func:`edge_weights_contraction` — ``out[e, w_k + u] = sum_j c * y[e] * x[src e] * g[dst e]``.

Why tables rather than generated source: the sparse CG structure is passed as small
int32/float tensors (one padded row of entries per output column family), so one kernel
source serves every irreps, stays readable, and is what ``torch.compile``/``torch.export``
see as plain tensor arguments; the cost is a masked tile over the padded entries, where
generated code could unroll exact coefficients.

Tiles: channels ``u`` are the vector axis. A node-kernel program holds
``[BLOCK_N * BLOCK_R * BLOCK_J (node, row, entry) triples, BLOCK_U channels]``, loads that
table tile once and walks the nodes' edges in step (the s-th edge of each node together;
with one node per program, as on a GPU, the edge is a scalar all threads share); an
edge-kernel program holds ``[BLOCK_P * BLOCK_J ((edge, row) pair, entry) couples, BLOCK_U]``.

Vectors: every operand is read and written as runs ``start + u`` of channels (the tables'
``ir_mul`` layout), and ``ALIGN`` (:func:`~equinet.ops.kernels.triton.cg_tables.channel_alignment`)
divides every start and multiplicity; the kernels say so to Triton (``tl.multiple_of``). The
runs then compile to 16-byte loads and stores, and Triton gives each thread 16 bytes of a row
(4 float32 or 2 float64 channels) instead of one channel: it holds fewer rows, and fewer of
their table values, so fewer registers.

Block sizes (:func:`_node_blocks`, :func:`_edge_blocks`): on a GPU one node per program, one
entry at a time (``BLOCK_J = 1``) and tiles of at most ``_GPU_TILE`` elements, the largest
that compile without register spills for sm_90 at the benchmark sizes, float32 and float64
(``scripts/triton_report.py``; BENCHMARKS.md), with ``_GPU_WARPS`` warps. Each thread holds
the per-row values (table entries, offsets) of the rows it computes, so registers grow with
the rows per thread. In Triton's interpreter, where every operation costs a fixed
Python overhead whatever its size, the whole table and as many nodes or pairs as fit
``2^18`` elements in one tile.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.runtime.jit import JITFunction

__all__ = ["INTERPRETED", "edge_attrs_contraction", "edge_weights_contraction", "gather_product_scatter"]


@triton.jit
def _load_entry(entries_ptr, coeffs_ptr, r, j, max_entries, ok, ALIGN: tl.constexpr):
    """Entry ``j`` of row ``r`` of a three-field table (``conv``, ``transpose``, ``weights``):
    ``(first start, edge-attribute index, second start, coefficient)``, zeros where not ``ok``."""
    k = (r * max_entries + j) * 3
    first = tl.multiple_of(tl.load(entries_ptr + k + 0, mask=ok, other=0), ALIGN)
    y_index = tl.load(entries_ptr + k + 1, mask=ok, other=0)
    second = tl.multiple_of(tl.load(entries_ptr + k + 2, mask=ok, other=0), ALIGN)
    c = tl.load(coeffs_ptr + k // 3, mask=ok, other=0)
    return first, y_index, second, c


@triton.jit
def _gather_product_scatter_kernel(
    a_ptr, a_s0, a_s1,  # gathered operand [Na, Da]
    y_ptr, y_s0, y_s1,  # edge attributes [E, D2]
    w_ptr, w_s0, w_s1,  # edge weights [E, W]
    gather_ptr,  # [E] row of `a` that the edge in slot i of the order reads
    order_ptr, ptr_ptr,  # edges sorted by output node, and each node's [begin, end) in that order
    rows_ptr, entries_ptr, coeffs_ptr,  # table: [R, 3], [R, J, 3], [R, J]
    out_ptr, out_s0,  # [N, Dout], rows contiguous
    num_nodes, num_rows, max_entries,
    BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_U: tl.constexpr, ALIGN: tl.constexpr,
):
    # q enumerates this program's (node, row, entry) triples, entry fastest: tiles are [Q] and
    # [Q, U]. With one node per program (on a GPU), the node's edge and source indices are
    # scalars that all threads share: per-row copies cost registers (BENCHMARKS.md). int64
    # nodes and edges: index * stride overflows int32.
    q = tl.arange(0, BLOCK_N * BLOCK_R * BLOCK_J)
    r = tl.program_id(1) * BLOCK_R + (q // BLOCK_J) % BLOCK_R
    if BLOCK_N == 1:
        node = tl.program_id(0).to(tl.int64)
        begin = tl.load(ptr_ptr + node)
        degree = tl.load(ptr_ptr + node + 1) - begin
        max_degree = degree
        q_ok = r < num_rows
    else:
        node = tl.program_id(0).to(tl.int64) * BLOCK_N + q // (BLOCK_R * BLOCK_J)
        q_ok = (node < num_nodes) & (r < num_rows)
        begin = tl.load(ptr_ptr + node, mask=q_ok, other=0)
        degree = tl.load(ptr_ptr + node + 1, mask=q_ok, other=0) - begin
        max_degree = tl.max(degree, axis=0)
    mul = tl.multiple_of(tl.load(rows_ptr + r * 3 + 1, mask=q_ok, other=0), ALIGN)
    count = tl.load(rows_ptr + r * 3 + 2, mask=q_ok, other=0)
    degree_q = tl.broadcast_to(degree, q.shape)  # the interpreter mistypes (scalar mask) & (vector mask)
    u = tl.arange(0, BLOCK_U)
    channel_ok = u[None, :] < mul[:, None]  # [Q, U]

    acc = tl.zeros([BLOCK_N * BLOCK_R * BLOCK_J, BLOCK_U], dtype=out_ptr.dtype.element_ty)
    # Entry chunks outside, edges inside: a chunk's table tile is loaded once per program.
    for j0 in range(0, max_entries, BLOCK_J):
        j = j0 + q % BLOCK_J
        entry_ok = q_ok & (j < count)
        a_start, y_index, w_start, c = _load_entry(entries_ptr, coeffs_ptr, r, j, max_entries, entry_ok, ALIGN)
        a_offset = (a_start[:, None] + u[None, :]) * a_s1
        w_offset = (w_start[:, None] + u[None, :]) * w_s1
        y_offset = y_index * y_s1
        # The s-th edge of every node of the block at once; nodes with fewer edges sit out.
        for s in range(0, max_degree):
            has_slot = s < degree
            edge = tl.load(order_ptr + begin + s, mask=has_slot, other=0)
            source = tl.load(gather_ptr + begin + s, mask=has_slot, other=0)  # not behind the edge's load
            edge, source = tl.broadcast_to(edge, q.shape), tl.broadcast_to(source, q.shape)
            slot_ok = entry_ok & (s < degree_q)
            ok = slot_ok[:, None] & channel_ok
            y = tl.load(y_ptr + edge * y_s0 + y_offset, mask=slot_ok, other=0)
            w = tl.load(w_ptr + edge[:, None] * w_s0 + w_offset, mask=ok, other=0)
            a = tl.load(a_ptr + source[:, None] * a_s0 + a_offset, mask=ok, other=0)
            acc += (c * y)[:, None] * w * a
    total = tl.sum(tl.reshape(acc, [BLOCK_N * BLOCK_R, BLOCK_J, BLOCK_U]), axis=1)

    p = tl.arange(0, BLOCK_N * BLOCK_R)  # (node, row) pairs, row fastest
    node = tl.program_id(0).to(tl.int64) * BLOCK_N + p // BLOCK_R
    r = tl.program_id(1) * BLOCK_R + p % BLOCK_R
    p_ok = (node < num_nodes) & (r < num_rows)
    out_start = tl.multiple_of(tl.load(rows_ptr + r * 3 + 0, mask=p_ok, other=0), ALIGN)
    mul = tl.multiple_of(tl.load(rows_ptr + r * 3 + 1, mask=p_ok, other=0), ALIGN)
    out_offset = node[:, None] * out_s0 + out_start[:, None] + u[None, :]
    tl.store(out_ptr + out_offset, total, mask=p_ok[:, None] & (u[None, :] < mul[:, None]))


@triton.jit
def _edge_attrs_kernel(
    x_ptr, x_s0, x_s1,  # node features [N, D1], read at senders
    w_ptr, w_s0, w_s1,  # edge weights [E, W]
    g_ptr, g_s0, g_s1,  # receiver-side operand [N, Dout], read at receivers
    src_ptr, dst_ptr,  # [E]
    rows_ptr, entries_ptr, coeffs_ptr,  # table: [D2, 1], [D2, J, 4], [D2, J]
    out_ptr,  # [E, D2], contiguous
    num_edges, num_rows, max_entries,
    BLOCK_P: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_U: tl.constexpr, ALIGN: tl.constexpr,
):
    # q enumerates this program's ((edge, row) pair, entry) couples, entry fastest: tiles are
    # [Q] and [Q, U]. A pair p (row fastest) is also the offset of out[edge, row].
    # int64: edge * stride overflows int32 on large graphs.
    q = tl.arange(0, BLOCK_P * BLOCK_J)
    p = tl.program_id(0).to(tl.int64) * BLOCK_P + q // BLOCK_J
    p_ok = p < num_edges * num_rows
    edge, r = p // num_rows, p % num_rows
    source = tl.load(src_ptr + edge, mask=p_ok, other=0)
    target = tl.load(dst_ptr + edge, mask=p_ok, other=0)
    count = tl.load(rows_ptr + r, mask=p_ok, other=0)
    u = tl.arange(0, BLOCK_U)[None, :]
    acc = tl.zeros([BLOCK_P * BLOCK_J], dtype=out_ptr.dtype.element_ty)
    for j0 in range(0, max_entries, BLOCK_J):
        j = j0 + q % BLOCK_J
        entry_ok = p_ok & (j < count)
        k = (r * max_entries + j) * 4
        x_start = tl.multiple_of(tl.load(entries_ptr + k + 0, mask=entry_ok, other=0), ALIGN)
        g_start = tl.multiple_of(tl.load(entries_ptr + k + 1, mask=entry_ok, other=0), ALIGN)
        w_start = tl.multiple_of(tl.load(entries_ptr + k + 2, mask=entry_ok, other=0), ALIGN)
        mul = tl.multiple_of(tl.load(entries_ptr + k + 3, mask=entry_ok, other=0), ALIGN)
        c = tl.load(coeffs_ptr + k // 4, mask=entry_ok, other=0)
        ok = entry_ok[:, None] & (u < mul[:, None])
        x = tl.load(x_ptr + source[:, None] * x_s0 + (x_start[:, None] + u) * x_s1, mask=ok, other=0)
        w = tl.load(w_ptr + edge[:, None] * w_s0 + (w_start[:, None] + u) * w_s1, mask=ok, other=0)
        g = tl.load(g_ptr + target[:, None] * g_s0 + (g_start[:, None] + u) * g_s1, mask=ok, other=0)
        acc += c * tl.sum(x * w * g, axis=1)
    total = tl.sum(tl.reshape(acc, [BLOCK_P, BLOCK_J]), axis=1)
    p = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    tl.store(out_ptr + p, total, mask=p < num_edges * num_rows)


@triton.jit
def _edge_weights_kernel(
    x_ptr, x_s0, x_s1,  # node features [N, D1], read at senders
    y_ptr, y_s0, y_s1,  # edge attributes [E, D2]
    g_ptr, g_s0, g_s1,  # receiver-side operand [N, Dout], read at receivers
    src_ptr, dst_ptr,  # [E]
    rows_ptr, entries_ptr, coeffs_ptr,  # table: [P, 3], [P, J, 3], [P, J]
    out_ptr, out_s0,  # [E, W], rows contiguous
    num_edges, num_rows, max_entries,
    BLOCK_P: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_U: tl.constexpr, ALIGN: tl.constexpr,
):
    # q enumerates ((edge, path) pair, entry) couples, entry fastest: tiles are [Q] and [Q, U].
    # A pair owns out[edge, w_start + u] for u < mul.
    q = tl.arange(0, BLOCK_P * BLOCK_J)
    p = tl.program_id(0).to(tl.int64) * BLOCK_P + q // BLOCK_J
    p_ok = p < num_edges * num_rows
    edge, r = p // num_rows, p % num_rows
    source = tl.load(src_ptr + edge, mask=p_ok, other=0)
    target = tl.load(dst_ptr + edge, mask=p_ok, other=0)
    mul = tl.multiple_of(tl.load(rows_ptr + r * 3 + 1, mask=p_ok, other=0), ALIGN)
    count = tl.load(rows_ptr + r * 3 + 2, mask=p_ok, other=0)
    u = tl.arange(0, BLOCK_U)[None, :]
    channel_ok = u < mul[:, None]
    acc = tl.zeros([BLOCK_P * BLOCK_J, BLOCK_U], dtype=out_ptr.dtype.element_ty)
    for j0 in range(0, max_entries, BLOCK_J):
        j = j0 + q % BLOCK_J
        entry_ok = p_ok & (j < count)
        x_start, y_index, g_start, c = _load_entry(entries_ptr, coeffs_ptr, r, j, max_entries, entry_ok, ALIGN)
        ok = entry_ok[:, None] & channel_ok
        y = tl.load(y_ptr + edge * y_s0 + y_index * y_s1, mask=entry_ok, other=0)
        x = tl.load(x_ptr + source[:, None] * x_s0 + (x_start[:, None] + u) * x_s1, mask=ok, other=0)
        g = tl.load(g_ptr + target[:, None] * g_s0 + (g_start[:, None] + u) * g_s1, mask=ok, other=0)
        acc += (c * y)[:, None] * x * g
    total = tl.sum(tl.reshape(acc, [BLOCK_P, BLOCK_J, BLOCK_U]), axis=1)

    p = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = p < num_edges * num_rows
    edge, r = p // num_rows, p % num_rows
    w_start = tl.multiple_of(tl.load(rows_ptr + r * 3 + 0, mask=p_ok, other=0), ALIGN)
    mul = tl.multiple_of(tl.load(rows_ptr + r * 3 + 1, mask=p_ok, other=0), ALIGN)
    out_ok = p_ok[:, None] & (u < mul[:, None])
    tl.store(out_ptr + edge[:, None] * out_s0 + w_start[:, None] + u, total, mask=out_ok)


# With TRITON_INTERPRET=1, @triton.jit returns an interpreted function instead of a
# JITFunction, and the kernels run on CPU tensors. Triton's own library (tl.zeros, tl.sum)
# is decorated when triton is first imported, so the variable must be set before that.
INTERPRETED = not isinstance(_gather_product_scatter_kernel, JITFunction)
if INTERPRETED and isinstance(tl.zeros, JITFunction):
    raise ImportError(
        "TRITON_INTERPRET=1 was set after triton was imported (torch, e3nn and torch_geometric import it): "
        "set it in the environment before Python starts"
    )


_GPU_TILE = 1024  # elements per tile on a GPU
_GPU_WARPS = 4  # warps per program on a GPU (Triton's default; the interpreter ignores it)
_INTERPRETER_TILE = 2**18  # elements per tile in the interpreter (numpy arrays)


def _node_blocks(num_nodes: int, entries: torch.Tensor, max_mul: int) -> tuple[int, int, int, int]:
    """(BLOCK_N, BLOCK_R, BLOCK_J, BLOCK_U) of the node kernel for a table of ``R`` rows of ``J`` entries."""
    num_rows, max_entries = entries.shape[0], entries.shape[1]
    block_u = triton.next_power_of_2(max_mul)
    if INTERPRETED:  # the whole table, and as many nodes as fit
        block_r, block_j = triton.next_power_of_2(num_rows), triton.next_power_of_2(max_entries)
        block_n = max(1, min(triton.next_power_of_2(num_nodes), _INTERPRETER_TILE // (block_r * block_j * block_u)))
        return block_n, block_r, block_j, block_u
    # On a GPU one node per program: nodes differ in degree, and a block waits for its largest.
    block_r = max(1, min(triton.next_power_of_2(num_rows), _GPU_TILE // block_u))
    return 1, block_r, 1, block_u


def _edge_blocks(num_edges: int, entries: torch.Tensor, max_mul: int) -> tuple[int, int, int]:
    """(BLOCK_P, BLOCK_J, BLOCK_U) of the edge kernels, BLOCK_P counting (edge, row) pairs."""
    num_rows, max_entries = entries.shape[0], entries.shape[1]
    block_u = triton.next_power_of_2(max_mul)
    pairs = triton.next_power_of_2(num_edges * num_rows)
    if INTERPRETED:  # every entry, and as many pairs as fit
        block_j = triton.next_power_of_2(max_entries)
        return max(1, min(pairs, _INTERPRETER_TILE // (block_j * block_u))), block_j, block_u
    return max(1, min(pairs, _GPU_TILE // block_u)), 1, block_u


def gather_product_scatter(
    a: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    gather: torch.Tensor,
    order: torch.Tensor,
    ptr: torch.Tensor,
    rows: torch.Tensor,
    entries: torch.Tensor,
    coeffs: torch.Tensor,
    out_dim: int,
    max_mul: int,
    align: int,
) -> torch.Tensor:
    """``out[n, row] = sum over the slots i of node n (``ptr[n] <= i < ptr[n+1]``) of the row's
    entries for edge ``order[i]``, reading row ``gather[i]`` of ``a``.

    Shapes: ``a [Na, Da]``, ``y [E, D2]``, ``w [E, W]``, ``gather [E]``, ``order [E]``,
    ``ptr [N + 1]``, a ``conv``/``transpose`` table → ``[N, out_dim]``. Inputs may be
    strided views; every output element is written (zeros for nodes without edges).
    """
    num_nodes = ptr.shape[0] - 1
    out = torch.empty(num_nodes, out_dim, dtype=a.dtype, device=a.device)
    block_n, block_r, block_j, block_u = _node_blocks(num_nodes, entries, max_mul)
    grid = (triton.cdiv(num_nodes, block_n), triton.cdiv(rows.shape[0], block_r))
    if num_nodes > 0:
        _gather_product_scatter_kernel[grid](
            a, a.stride(0), a.stride(1), y, y.stride(0), y.stride(1), w, w.stride(0), w.stride(1),
            gather, order, ptr, rows, entries, coeffs, out, out.stride(0),
            num_nodes, rows.shape[0], entries.shape[1],
            BLOCK_N=block_n, BLOCK_R=block_r, BLOCK_J=block_j, BLOCK_U=block_u, ALIGN=align, num_warps=_GPU_WARPS,
        )  # fmt: skip
    return out


def edge_attrs_contraction(
    x: torch.Tensor,
    w: torch.Tensor,
    g: torch.Tensor,
    src: torch.Tensor,
    dst: torch.Tensor,
    rows: torch.Tensor,
    entries: torch.Tensor,
    coeffs: torch.Tensor,
    max_mul: int,
    align: int,
) -> torch.Tensor:
    """``out[e, b]``: the ``attrs`` table contracted with ``x[src]``, ``w`` and ``g[dst]`` → ``[E, D2]``."""
    num_edges = src.shape[0]
    out = torch.empty(num_edges, rows.shape[0], dtype=x.dtype, device=x.device)
    if num_edges > 0:
        block_p, block_j, block_u = _edge_blocks(num_edges, entries, max_mul)
        grid = (triton.cdiv(num_edges * rows.shape[0], block_p),)
        _edge_attrs_kernel[grid](
            x, x.stride(0), x.stride(1), w, w.stride(0), w.stride(1), g, g.stride(0), g.stride(1),
            src, dst, rows, entries, coeffs, out,
            num_edges, rows.shape[0], entries.shape[1],
            BLOCK_P=block_p, BLOCK_J=block_j, BLOCK_U=block_u, ALIGN=align, num_warps=_GPU_WARPS,
        )  # fmt: skip
    return out


def edge_weights_contraction(
    x: torch.Tensor,
    y: torch.Tensor,
    g: torch.Tensor,
    src: torch.Tensor,
    dst: torch.Tensor,
    rows: torch.Tensor,
    entries: torch.Tensor,
    coeffs: torch.Tensor,
    weight_numel: int,
    max_mul: int,
    align: int,
) -> torch.Tensor:
    """``out[e, w_k + u]``: the ``weights`` table contracted with ``x[src]``, ``y`` and ``g[dst]`` → ``[E, W]``."""
    num_edges = src.shape[0]
    out = torch.empty(num_edges, weight_numel, dtype=x.dtype, device=x.device)
    if num_edges > 0:
        block_p, block_j, block_u = _edge_blocks(num_edges, entries, max_mul)
        grid = (triton.cdiv(num_edges * rows.shape[0], block_p),)
        _edge_weights_kernel[grid](
            x, x.stride(0), x.stride(1), y, y.stride(0), y.stride(1), g, g.stride(0), g.stride(1),
            src, dst, rows, entries, coeffs, out, out.stride(0),
            num_edges, rows.shape[0], entries.shape[1],
            BLOCK_P=block_p, BLOCK_J=block_j, BLOCK_U=block_u, ALIGN=align, num_warps=_GPU_WARPS,
        )  # fmt: skip
    return out
