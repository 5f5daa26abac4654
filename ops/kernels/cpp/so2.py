"""The SO(2) convolution (:class:`~equinet.ops.SO2Convolution`) on the fused C++ CPU kernel
``so2_cpp.cpp`` (``backend="cpp"``).

Per edge, the kernel gathers the sender's features, rotates them into the edge frame, applies
the SO(2) map with the edge's weights, rotates back and adds the message to the receiver; its
backward pass makes the gradients of the features, Wigner entries and weights in one sweep.
"""

from __future__ import annotations

import itertools

import torch

from ...so2_blocks import SO2Blocks, wigner_entries, wigner_entry, wigner_entry_starts
from .build import load_cpp

__all__ = ["CppSO2"]


def _kernel_tables(blocks: SO2Blocks) -> list[torch.Tensor]:
    """The tables of ``so2_cpp.cpp``: ``rows_in, factors_in, terms, rows_out, factors_out``.

    Rows are ``(first component, 2l+1, first Wigner entry)``: components of the channels-last
    features (used input segments) or output, entries of
    :func:`~equinet.ops.so2_blocks.wigner_entries`; terms are ``(row of ỹ, row of x̃, weight
    column)``. Output rows that no block writes get factor 0.
    """
    starts = wigner_entry_starts(blocks.l_max, blocks.m_max)

    def rows(irreps, segments, frame_rows, first_of):
        table, factors, row_of = [], [], {}
        for j in segments:
            l = irreps[j].ir.l
            for t, (offset, factor) in enumerate(zip(*frame_rows[j])):
                row_of[j, t] = len(table)
                table.append((first_of[j], 2 * l + 1, wigner_entry(starts, blocks.m_max, l, offset)))
                factors.append(factor)
        return table, factors, row_of

    irreps_in, irreps_out, used = blocks.irreps_in, blocks.irreps_out, blocks.used
    first_in = dict(zip(used, itertools.accumulate([irreps_in[j].ir.dim for j in used], initial=0)))
    first_out = dict(enumerate(itertools.accumulate([ir.dim for _, ir in irreps_out], initial=0)))
    rows_in, factors_in, row_in = rows(irreps_in, used, blocks.rows_in, first_in)
    rows_out, factors_out, row_out = rows(irreps_out, range(len(irreps_out)), blocks.rows_out, first_out)
    terms, column = [], 0
    for m, outputs, inputs in blocks.blocks:
        for j_out in outputs:
            for j_in in inputs:
                for t in [0] if m == 0 else [2 * m - 1, 2 * m]:
                    terms.append((row_out[j_out, t], row_in[j_in, t], column))
                column += 1
    written = {term[0] for term in terms}
    factors_out = [f if t in written else 0.0 for t, f in enumerate(factors_out)]
    as_long = lambda table: torch.tensor(table, dtype=torch.long).view(-1, 3)
    as_double = lambda values: torch.tensor(values, dtype=torch.float64)
    return [as_long(rows_in), as_double(factors_in), as_long(terms), as_long(rows_out), as_double(factors_out)]


def _wigner_from_entries(blocks: SO2Blocks, entries: torch.Tensor) -> list[torch.Tensor]:
    """The inverse of :func:`~equinet.ops.so2_blocks.wigner_entries`: ``[E, 2k+1, 2l+1]`` for l = 0 .. l_max."""
    shapes = [(2 * min(l, blocks.m_max) + 1, 2 * l + 1) for l in range(blocks.l_max + 1)]
    pieces = entries.split([rows * columns for rows, columns in shapes], dim=1)
    return [piece.view(-1, *shape) for piece, shape in zip(pieces, shapes)]


class _SO2Kernel(torch.autograd.Function):
    """The kernel, from channels-last features ``x [N_in, components, C]``, Wigner entries
    ``[E, W]`` and edge weights to ``[N, sum of 2l+1 over irreps_out, C]``.

    The backward pass is one sweep of the kernel over the edges in sender order. A backward
    pass that builds a graph (force training differentiates twice) differentiates the
    reference (``summed_messages``, the operator's own code) on the same inputs instead, so
    every order of derivative exists.
    """

    @staticmethod
    def forward(ctx, kernel, summed_messages, x, entries, edge_weights, edge_index, num_receivers):
        blocks = kernel.blocks
        sender, receiver = edge_index
        out = x.new_zeros(num_receivers, blocks.irreps_out.dim // blocks.channels, x.shape[-1])
        load_cpp().so2_forward(x, entries, edge_weights, sender, receiver, torch.argsort(receiver), *kernel.tables, out)
        ctx.kernel, ctx.summed_messages = kernel, summed_messages
        ctx.save_for_backward(x, entries, edge_weights, edge_index)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        kernel, (x, entries, edge_weights, edge_index) = ctx.kernel, ctx.saved_tensors
        wanted = ctx.needs_input_grad[2:5]
        if torch.is_grad_enabled():
            inputs = [t for t, want in zip((x, entries, edge_weights), wanted) if want]
            with torch.enable_grad():
                wigner = _wigner_from_entries(kernel.blocks, entries)
                out = ctx.summed_messages(x, edge_index, edge_weights, wigner, grad_out.shape[0])
            grads = iter(torch.autograd.grad(out, inputs, grad_out.reshape(out.shape), create_graph=True))
            return None, None, *(next(grads) if want else None for want in wanted), None, None
        grad_x = torch.zeros_like(x) if wanted[0] else x.new_empty(0)
        grad_entries = torch.empty(entries.shape, dtype=x.dtype) if wanted[1] else x.new_empty(0)  # written whole
        grad_weights = torch.empty(edge_weights.shape, dtype=x.dtype) if wanted[2] else x.new_empty(0)
        sender, receiver = edge_index
        load_cpp().so2_backward(
            x, entries, edge_weights, sender, receiver, torch.argsort(sender), *kernel.tables, grad_out.contiguous(),
            grad_x, grad_entries, grad_weights,
        )
        grads = (grad_x, grad_entries, grad_weights)
        return None, None, *(g if want else None for g, want in zip(grads, wanted)), None, None


class CppSO2(torch.nn.Module):
    """The ``backend="cpp"`` implementation behind :class:`~equinet.ops.SO2Convolution`.

    Shapes: ``node_feats [N, irreps_in.dim]``, ``wigner`` as ``edge_wigner_D(l >= l_max, edge_vec,
    m_max >= blocks.m_max)``, ``edge_weights [E, weight_numel]``, ``edge_index [2, E]``,
    ``num_receivers`` (the rows that receivers index) → ``[num_receivers, irreps_out.dim]``; ``summed_messages`` is the reference's differentiable message sum
    (see :class:`_SO2Kernel`).
    """

    def __init__(self, blocks: SO2Blocks):
        super().__init__()
        self.blocks = blocks
        self.tables = _kernel_tables(blocks)  # CPU tensors for the kernel, not module state

    def forward(self, node_feats, wigner, edge_weights, edge_index, num_receivers, summed_messages) -> torch.Tensor:
        self._check(node_feats, edge_weights, wigner)
        channels = self.blocks.channels
        x = self.blocks.channels_last(node_feats)
        # The kernel works on whole 64-byte vectors of channels: pad them with zeros.
        pad = -channels % (64 // x.element_size())
        if pad:
            x = torch.nn.functional.pad(x, (0, pad))
            columns = edge_weights.reshape(len(edge_weights), self.blocks.weight_numel // channels, channels)
            edge_weights = torch.nn.functional.pad(columns, (0, pad)).flatten(1)
        entries = wigner_entries(wigner, self.blocks.l_max, self.blocks.m_max)
        out = _SO2Kernel.apply(
            self, summed_messages, x, entries, edge_weights.contiguous(), edge_index.long().contiguous(), num_receivers
        )
        return self.blocks.channels_first(out[..., :channels])

    @staticmethod
    def _check(node_feats, edge_weights, wigner) -> None:
        tensors = {"node_feats": node_feats, "edge_weights": edge_weights, "edge_vec": wigner[0]}
        off_cpu = [f"{name} on {t.device}" for name, t in tensors.items() if t.device.type != "cpu"]
        if off_cpu:
            raise ValueError(f"backend='cpp' runs on the CPU, but got {', '.join(off_cpu)}; use backend='torch' or 'triton' there")
        dtypes = {t.dtype for t in tensors.values()}
        if len(dtypes) != 1 or dtypes.pop() not in (torch.float32, torch.float64):
            raise ValueError(
                "backend='cpp' needs float32 or float64 inputs of one dtype, got "
                + ", ".join(f"{t.dtype} ({name})" for name, t in tensors.items())
            )
