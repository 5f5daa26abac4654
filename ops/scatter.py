"""Message aggregation over edges without per-edge feature tensors in memory.

The message-passing sums of per-edge, per-channel weights times sender features or
per-edge vectors,

    gather_scale_scatter:  out[i, k, c] = sum_{e : receiver_e = i}  w[e, c] * x[sender_e, k, c]
    scatter_outer:         out[i, k, c] = sum_{e : receiver_e = i}  w[e, c] * v[e, k],

written in eager PyTorch (``index_select``, multiply, ``index_add``) make several
``[E, K, C]`` tensors in the forward pass and more in the backward. On a CPU those are
the cost: each is a fresh allocation of tens of MB (the allocator maps new pages and
the kernel zeroes them), for a multiply that itself takes a few ms. These functions
compute the same sums over blocks of edges, in buffers that stay small and are reused.
Channels come last (K components of C channels: ``[n, K, C]``), so that every
multiply by a weight runs along contiguous channels.
Their derivatives are written with each other,

    gather_scale_scatter  d/dx: gather_scale_scatter(grad, w, receiver -> sender)   (indices swapped)
                          d/dw: edge_dot(grad, x)[e, c] = sum_k grad[receiver_e, k, c] x[sender_e, k, c]
    edge_dot              d/da, d/db: gather_scale_scatter
    scatter_outer         d/dw: sum_k grad[receiver_e, k, c] v[e, k];  d/dv: sum_c grad[receiver_e, k, c] w[e, c]
                          (whose derivatives are scatter_outer and each other),

so derivatives of any order work (force training differentiates twice). On GPUs, whose
caching allocator reuses memory and whose kernels want many edges at once, and under
tracing or compilation (symbolic sizes, which a compiler fuses itself) they use the
plain formula.
"""

from __future__ import annotations

import torch

__all__ = ["edge_dot", "gather_scale_scatter", "scatter_outer"]

EDGE_BLOCK = 1024  # edges per block: [EDGE_BLOCK, K, C] buffers of a few MB, reused


def _use_blocks(*tensors: torch.Tensor) -> bool:
    """On a CPU, outside tracing and compilation (every size a plain int)."""
    return (
        not torch.compiler.is_compiling()
        and all(t.device.type == "cpu" for t in tensors)
        and all(isinstance(size, int) for t in tensors for size in t.shape)
    )


def _blocks(num_edges: int):
    """Slices of at most EDGE_BLOCK edges covering ``range(num_edges)``."""
    for start in range(0, num_edges, EDGE_BLOCK):
        yield slice(start, min(start + EDGE_BLOCK, num_edges))


def _buffer(like: torch.Tensor, num_edges: int, *shape: int) -> torch.Tensor:
    return like.new_empty((min(EDGE_BLOCK, num_edges), *shape))


def _gather_scale_scatter(x, weights, sender, receiver, num_receivers):
    out = x.new_zeros((num_receivers, *x.shape[1:]))
    buffer = _buffer(x, sender.shape[0], *x.shape[1:])
    for block in _blocks(sender.shape[0]):
        rows = buffer[: block.stop - block.start]
        torch.index_select(x, 0, sender[block], out=rows)
        out.index_add_(0, receiver[block], rows.mul_(weights[block].unsqueeze(1)))
    return out


def _edge_dot(a, b, index_a, index_b):
    out = a.new_empty((index_a.shape[0], a.shape[2]))
    buffer_a, buffer_b = _buffer(a, index_a.shape[0], *a.shape[1:]), _buffer(b, index_a.shape[0], *b.shape[1:])
    for block in _blocks(index_a.shape[0]):
        rows_a, rows_b = buffer_a[: block.stop - block.start], buffer_b[: block.stop - block.start]
        torch.index_select(a, 0, index_a[block], out=rows_a)
        torch.index_select(b, 0, index_b[block], out=rows_b)
        torch.sum(rows_a.mul_(rows_b), dim=1, out=out[block])
    return out


def _scatter_outer(weights, vectors, receiver, num_receivers):
    out = weights.new_zeros((num_receivers, vectors.shape[1], weights.shape[1]))
    buffer = _buffer(weights, receiver.shape[0], vectors.shape[1], weights.shape[1])
    for block in _blocks(receiver.shape[0]):
        rows = buffer[: block.stop - block.start]
        torch.mul(vectors[block].unsqueeze(-1), weights[block].unsqueeze(1), out=rows)
        out.index_add_(0, receiver[block], rows)
    return out


def _gather_contract(grad, factor, receiver, dim):
    """``(grad[receiver] * factor).sum(dim)``, factor broadcast along the other dimension of ``grad [n, K, C]``."""
    out = grad.new_empty((receiver.shape[0], grad.shape[3 - dim]))
    buffer = _buffer(grad, receiver.shape[0], *grad.shape[1:])
    for block in _blocks(receiver.shape[0]):
        rows = buffer[: block.stop - block.start]
        torch.index_select(grad, 0, receiver[block], out=rows)
        torch.sum(rows.mul_(factor[block].unsqueeze(3 - dim)), dim=dim, out=out[block])
    return out


class _GatherScaleScatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weights, sender, receiver, num_receivers):
        ctx.save_for_backward(x, weights, sender, receiver)
        return _gather_scale_scatter(x, weights, sender, receiver, num_receivers)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()  # often a transposed view: gathers of strided rows are slow
        x, weights, sender, receiver = ctx.saved_tensors
        grad_x = grad_weights = None
        if ctx.needs_input_grad[0]:
            grad_x = _GatherScaleScatter.apply(grad, weights, receiver, sender, x.shape[0])
        if ctx.needs_input_grad[1]:
            grad_weights = _EdgeDot.apply(grad, x, receiver, sender)
        return grad_x, grad_weights, None, None, None


class _EdgeDot(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, index_a, index_b):
        ctx.save_for_backward(a, b, index_a, index_b)
        return _edge_dot(a, b, index_a, index_b)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        a, b, index_a, index_b = ctx.saved_tensors
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = _GatherScaleScatter.apply(b, grad, index_b, index_a, a.shape[0])
        if ctx.needs_input_grad[1]:
            grad_b = _GatherScaleScatter.apply(a, grad, index_a, index_b, b.shape[0])
        return grad_a, grad_b, None, None


class _ScatterOuter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weights, vectors, receiver, num_receivers):
        ctx.save_for_backward(weights, vectors, receiver)
        return _scatter_outer(weights, vectors, receiver, num_receivers)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        weights, vectors, receiver = ctx.saved_tensors
        grad_weights = grad_vectors = None
        if ctx.needs_input_grad[0]:
            grad_weights = _GatherContract.apply(grad, vectors, receiver, 1)
        if ctx.needs_input_grad[1]:
            grad_vectors = _GatherContract.apply(grad, weights, receiver, 2)
        return grad_weights, grad_vectors, None, None


class _GatherContract(torch.autograd.Function):
    """``out = (grad[receiver] * factor).sum(dim)``: the derivatives of :class:`_ScatterOuter`.

    dim 1 (sum over components): factor ``[E, K]``, out ``[E, C]``; dim 2 (over
    channels): factor ``[E, C]``, out ``[E, K]``.
    """

    @staticmethod
    def forward(ctx, grad, factor, receiver, dim):
        ctx.save_for_backward(grad, factor, receiver)
        ctx.dim = dim
        return _gather_contract(grad, factor, receiver, dim)

    @staticmethod
    def backward(ctx, grad_out):
        grad_out = grad_out.contiguous()
        grad, factor, receiver = ctx.saved_tensors
        dim, num_receivers = ctx.dim, grad.shape[0]
        grad_grad = grad_factor = None
        if ctx.needs_input_grad[0]:
            pair = (grad_out, factor) if dim == 1 else (factor, grad_out)  # (weights [E, C], vectors [E, K])
            grad_grad = _ScatterOuter.apply(*pair, receiver, num_receivers)
        if ctx.needs_input_grad[1]:
            grad_factor = _GatherContract.apply(grad, grad_out, receiver, 3 - dim)
        return grad_grad, grad_factor, None, None


def _check(x: torch.Tensor, weights: torch.Tensor, sender: torch.Tensor, receiver: torch.Tensor) -> None:
    if x.dim() != 3:
        raise ValueError(f"x must have shape [n, K, C] (atoms, components, channels), got {list(x.shape)}")
    if sender.dim() != 1 or receiver.shape != sender.shape:
        raise ValueError(f"sender and receiver must both have shape [E], got {list(sender.shape)} and {list(receiver.shape)}")
    if weights.shape != (sender.shape[0], x.shape[2]):
        raise ValueError(f"weights must have shape [E, C] = {[sender.shape[0], x.shape[2]]}, got {list(weights.shape)}")


def gather_scale_scatter(
    x: torch.Tensor, weights: torch.Tensor, sender: torch.Tensor, receiver: torch.Tensor, num_receivers: int
) -> torch.Tensor:
    """``out[i, :, c] = sum over edges e with receiver_e = i of weights[e, c] * x[sender_e, :, c]``.

    Shapes: ``x: [n_s, K, C]``, ``weights: [E, C]``, ``sender, receiver: [E]`` (int64)
    → ``[num_receivers, K, C]``. Differentiable to any order in ``x`` and ``weights``.
    """
    _check(x, weights, sender, receiver)
    if not _use_blocks(x, weights, sender):
        rows = x.index_select(0, sender) * weights.unsqueeze(1)
        return x.new_zeros((num_receivers, *x.shape[1:])).index_add(0, receiver, rows)
    dtype = torch.promote_types(x.dtype, weights.dtype)
    return _GatherScaleScatter.apply(x.to(dtype).contiguous(), weights.to(dtype).contiguous(), sender, receiver, num_receivers)


def edge_dot(a: torch.Tensor, b: torch.Tensor, index_a: torch.Tensor, index_b: torch.Tensor) -> torch.Tensor:
    """``out[e, c] = sum_k a[index_a[e], k, c] * b[index_b[e], k, c]``.

    Shapes: ``a: [n_a, K, C]``, ``b: [n_b, K, C]``, ``index_a, index_b: [E]`` → ``[E, C]``.
    Differentiable to any order in ``a`` and ``b``.
    """
    if a.dim() != 3 or b.dim() != 3 or a.shape[1:] != b.shape[1:] or index_a.shape != index_b.shape:
        raise ValueError(
            f"edge_dot needs a [n_a, K, C] and b [n_b, K, C] with the same K, C and index_a, index_b of the same "
            f"shape [E], got {list(a.shape)}, {list(b.shape)}, {list(index_a.shape)} and {list(index_b.shape)}"
        )
    if not _use_blocks(a, b, index_a):
        return (a.index_select(0, index_a) * b.index_select(0, index_b)).sum(1)
    dtype = torch.promote_types(a.dtype, b.dtype)
    return _EdgeDot.apply(a.to(dtype).contiguous(), b.to(dtype).contiguous(), index_a, index_b)


def scatter_outer(weights: torch.Tensor, vectors: torch.Tensor, receiver: torch.Tensor, num_receivers: int) -> torch.Tensor:
    """``out[i, k, c] = sum over edges e with receiver_e = i of weights[e, c] * vectors[e, k]``.

    Shapes: ``weights: [E, C]``, ``vectors: [E, K]``, ``receiver: [E]`` (int64) →
    ``[num_receivers, K, C]``. Differentiable to any order in ``weights`` and ``vectors``.
    """
    if weights.dim() != 2 or vectors.dim() != 2 or not weights.shape[0] == vectors.shape[0] == receiver.shape[0]:
        raise ValueError(
            f"weights [E, C], vectors [E, K] and receiver [E] must share E, got {list(weights.shape)}, "
            f"{list(vectors.shape)} and {list(receiver.shape)}"
        )
    if not _use_blocks(weights, vectors):
        rows = vectors.unsqueeze(-1) * weights.unsqueeze(1)
        return rows.new_zeros((num_receivers, *rows.shape[1:])).index_add(0, receiver, rows)
    dtype = torch.promote_types(weights.dtype, vectors.dtype)
    return _ScatterOuter.apply(weights.to(dtype).contiguous(), vectors.to(dtype).contiguous(), receiver, num_receivers)
