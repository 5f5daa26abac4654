"""The Gaunt product as one autograd function, differentiable to any order, over an engine
that computes it: the PyTorch reference here, or a backend's (:mod:`equinet.ops.kernels`)."""

from __future__ import annotations

import torch

from ..kernels import backend_names, build
from .layout import Layout
from .matrices import num_values, transform_size
from .transforms import analysis, combine, factor

__all__ = ["GauntProduct", "TorchEngine", "backend_engine"]


def _channel_sum(values: torch.Tensor, layout: Layout) -> torch.Tensor:
    """``values [n, C, D]`` summed over the channels for a one-channel feature."""
    return values.sum(1, keepdim=True) if values.shape[1] != layout.channels else values


def _write(values: torch.Tensor, layout: Layout, out: torch.Tensor) -> None:
    """``values [n, C, D]`` (module order) into the rows ``out [n, channels * D]`` (e3nn layout):
    :meth:`Layout.merge` written in place."""
    torch.index_select(_channel_sum(values, layout).flatten(1), 1, layout.scatter, out=out)


# On a CPU the grid values of a large batch do not fit in cache, and streaming them
# through memory for each elementwise step (and saving them for the backward pass) costs
# more than the matrix products. So the product runs in chunks of about this many values
# per function, reading and writing e3nn's layout and applying the weights chunk by chunk,
# and saves only its inputs.
_CHUNK_VALUES = 1 << 17


def _row_chunks(num: int, channels: int, points: int, device: torch.device) -> list[slice]:
    """Row ranges of the chunks (none for an empty batch, which MKL's FFT would reject)."""
    step = max(1, _CHUNK_VALUES // (channels * points)) if device.type == "cpu" else max(1, num)
    return [slice(start, start + step) for start in range(0, num, step)]


class GauntProduct(torch.autograd.Function):
    """``out = merge_o(s_o * G(split_a(x_a) * s_a, split_b(x_b) * s_b))`` with autograd, to any order.

    ``x_a [N, dim_a]``, ``x_b [N, dim_b]`` in e3nn's layout, per-component scales ``s [channels, D]``
    (the per-degree weights spread over components), ``G`` the Gaunt product ``(1/4pi) int f_a f_b Y``
    (or, with ``bracket``, ``(1/4pi) int {f_a, f_b} Y``) channel by channel, ``layouts`` the three
    features' :class:`Layout`; → ``[N, dim_o]``.

    The Gaunt product is symmetric in its three arguments, so its derivative in ``x_a`` is the
    product of ``x_b`` and the output gradient read on the degrees of ``a`` (exact on the same
    grid or torus: the band limit does not change), and so on for higher orders. A backward
    pass that builds no graph goes through the batch once, taking each of the three functions
    to the grid once per chunk. The bracket form ``int h {f, g}`` is cyclic and antisymmetric
    (``= int f {g, h} = -int g {f, h}``), so its derivatives are brackets again.
    """

    @staticmethod
    def forward(ctx, x_a, x_b, s_a, s_b, s_o, layouts: tuple[Layout, Layout, Layout], method: str, bracket: bool, engine):
        ctx.save_for_backward(x_a, x_b, s_a, s_b, s_o)
        ctx.layouts, ctx.method, ctx.bracket, ctx.engine = layouts, method, bracket, engine
        out = torch.empty(x_a.shape[0], layouts[2].channels * s_o.shape[1], dtype=x_a.dtype, device=x_a.device)
        engine.forward(x_a, x_b, s_a, s_b, s_o, layouts, method, bracket, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        x_a, x_b, s_a, s_b, s_o = ctx.saved_tensors
        needs = ctx.needs_input_grad[:5]
        args = (x_a, x_b, s_a, s_b, s_o, grad.contiguous(), ctx.layouts, ctx.method, ctx.bracket)
        if torch.is_grad_enabled():  # create_graph: differentiable
            grads = _composed_backward(*args, needs, ctx.engine)
        else:
            grads = ctx.engine.fused_backward(*args, needs)
        return (*grads, None, None, None, None)


def _composed_backward(x_a, x_b, s_a, s_b, s_o, grad, layouts, method, bracket, needs, engine) -> list:
    """The gradients of :class:`GauntProduct` as Gaunt products (or brackets) again, differentiable."""
    a, b, o = layouts
    grads = [None] * 5

    def weight_gradient(x, u, layout):  # d/ds of sum(u * x * s), per (channel, component)
        return layout.split((x * u).sum(0))

    if needs[0] or needs[2]:
        u_a = GauntProduct.apply(x_b, grad, s_b, s_o, torch.ones_like(s_a), (b, o, a), method, bracket, engine)
        grads[0] = u_a * s_a.flatten().index_select(0, a.scatter) if needs[0] else None
        grads[2] = weight_gradient(x_a, u_a, a) if needs[2] else None
    if needs[1] or needs[3]:
        u_b = GauntProduct.apply(x_a, grad, s_a, s_o, torch.ones_like(s_b), (a, o, b), method, bracket, engine)
        u_b = -u_b if bracket else u_b
        grads[1] = u_b * s_b.flatten().index_select(0, b.scatter) if needs[1] else None
        grads[3] = weight_gradient(x_b, u_b, b) if needs[3] else None
    if needs[4]:
        forward = GauntProduct.apply(x_a, x_b, s_a, s_b, torch.ones_like(s_o), layouts, method, bracket, engine)
        grads[4] = weight_gradient(grad, forward, o)
    return grads


class TorchEngine:
    """The reference engine of :class:`GauntProduct` (backend ``"torch"``): PyTorch on the
    grid or the torus, in chunks of rows on a CPU. Every engine (the C++ one,
    :mod:`equinet.ops.kernels.cpp.gaunt`) has these two methods."""

    differentiable = False  # GauntProduct supplies the derivatives

    @staticmethod
    def forward(x_a, x_b, s_a, s_b, s_o, layouts, method: str, bracket: bool, out: torch.Tensor) -> None:
        """Writes the product into ``out [N, dim_o]``."""
        a, b, o = layouts
        size = transform_size(method, a.degrees, b.degrees, o.degrees)
        first, second = ("rotation", "gradient") if bracket else (None, None)
        channels = max(a.channels, b.channels) * (3 if bracket else 1)
        for rows in _row_chunks(x_a.shape[0], channels, num_values(method, size), x_a.device):
            f_a = factor(a.split(x_a[rows]) * s_a, a.degrees, method, size, first)
            f_b = factor(b.split(x_b[rows]) * s_b, b.degrees, method, size, second)
            _write(analysis(combine(f_a, f_b, method, bracket), o.degrees, method, size) * s_o, o, out[rows])

    @staticmethod
    def fused_backward(x_a, x_b, s_a, s_b, s_o, grad, layouts, method, bracket, needs) -> list:
        """The gradients of :class:`GauntProduct` in one pass over the batch, no graph. For the
        bracket, ``d/dx_a = {f_b, h}``, ``d/dx_b = -{f_a, h}`` and ``d/ds_o = {f_a, f_b}`` (read on
        the degrees of each), so ``f_a`` and ``f_b`` are needed as rotations, ``h`` (and ``f_b``,
        for ``s_o``) as gradients."""
        a, b, o = layouts
        size = transform_size(method, a.degrees, b.degrees, o.degrees)
        grad_x_a = torch.empty_like(x_a, memory_format=torch.contiguous_format) if needs[0] else None
        grad_x_b = torch.empty_like(x_b, memory_format=torch.contiguous_format) if needs[1] else None
        grad_s = [torch.zeros_like(s) if need else None for s, need in zip((s_a, s_b, s_o), needs[2:])]
        wanted = [grad_x is not None or grad_s[i] is not None for i, grad_x in enumerate((grad_x_a, grad_x_b, None))]
        channels = max(a.channels, b.channels) * (3 if bracket else 1)
        first, second = ("rotation", "gradient") if bracket else (None, None)
        for rows in _row_chunks(x_a.shape[0], channels, num_values(method, size), x_a.device):
            raw_a, raw_b, raw_o = a.split(x_a[rows]), b.split(x_b[rows]), o.split(grad[rows])
            f_a = factor(raw_a * s_a, a.degrees, method, size, first) if wanted[1] or wanted[2] else None
            f_b = factor(raw_b * s_b, b.degrees, method, size, first) if wanted[0] or (wanted[2] and not bracket) else None
            g_b = factor(raw_b * s_b, b.degrees, method, size, second) if bracket and wanted[2] else f_b  # the product: f_b
            g_o = factor(raw_o * s_o, o.degrees, method, size, second) if wanted[0] or wanted[1] else None
            for i, (raw, s, layout, f, g, sign, grad_x) in enumerate(
                ((raw_a, s_a, a, f_b, g_o, 1, grad_x_a), (raw_b, s_b, b, f_a, g_o, -1 if bracket else 1, grad_x_b),
                 (raw_o, s_o, o, f_a, g_b, 1, None))
            ):
                if not wanted[i]:
                    continue
                u = _channel_sum(analysis(combine(f, g, method, bracket), layout.degrees, method, size), layout)
                u = -u if sign < 0 else u
                if grad_x is not None:
                    _write(u * s, layout, grad_x[rows])
                if grad_s[i] is not None:
                    grad_s[i] += (raw * u).sum(0)
        return [grad_x_a, grad_x_b, *grad_s]


def backend_engine(family: str, backend: str, *description):
    """``backend`` of the Gaunt operator ``family`` from the registry (:mod:`equinet.ops.kernels`),
    ``None`` for the reference; a one-line ValueError naming the backends for an unknown one."""
    names = backend_names(family)
    if backend not in names:
        raise ValueError(f"backend must be one of {', '.join(names)}, got {backend!r}")
    return build(family, backend, *description)
