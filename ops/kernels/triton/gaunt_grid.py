"""The Gaunt sphere-grid product (:class:`~equinet.ops.GauntTensorProduct`, ``method="grid"``)
as one Triton kernel, registered as the ``torch.library`` operator ``equinet::gaunt_grid_product``.

For rows ``r`` (sample, channel) the kernel computes

    out[r] = ((x1[r] @ S1) * (x2[r] @ S2)) @ A3,

values on the grid by the synthesis matrices ``S [D, P]``, their pointwise product, and
the quadrature ``A [P, D_out]`` back to coefficients, tile by tile over the grid points, so
the grid values never reach memory. The operator is bilinear in ``x1`` and ``x2`` and its
matrices are constants, so its derivatives are the same operator with other matrices:

    d/dx1 <g, out> = ((x2 @ S2) * (g @ A3^T)) @ S1^T,     d/dx2 alike,

which closes it under differentiation to any order (force training differentiates twice).
``x2`` may hold one channel for all (``[N, 1, D2]``, e.g. edge spherical harmonics); its
gradient is then summed over the channels.

On a GPU the products are ``tl.dot`` tiles (float32 in IEEE precision, not TF32, so that the
result matches the torch path to float32 rounding); the grid is the full one, not the
mirror halves of the torch path (twice the points, but no even/odd bookkeeping).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .cg_ops import check_device

__all__ = ["gaunt_grid_product"]

Tensor = torch.Tensor


@triton.jit
def _grid_product_kernel(
    x1_ptr, x1_s0, x1_s1, x1_s2,  # [N, C1, D1], C1 = 1 broadcasts (stride 0)
    x2_ptr, x2_s0, x2_s1, x2_s2,  # [N, C2, D2]
    s1_ptr, s1_s0, s1_s1,  # synthesis [D1, P]
    s2_ptr, s2_s0, s2_s1,  # synthesis [D2, P]
    a_ptr, a_s0, a_s1,  # analysis [P, D3]
    out_ptr,  # [N * C, D3], contiguous
    num_rows, channels, d1, d2, d3, points,
    BLOCK_R: tl.constexpr, BLOCK_D1: tl.constexpr, BLOCK_D2: tl.constexpr, BLOCK_D3: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    r_ok = r < num_rows
    sample, channel = r // channels, r % channels
    k1, k2, k3 = tl.arange(0, BLOCK_D1), tl.arange(0, BLOCK_D2), tl.arange(0, BLOCK_D3)
    x1 = tl.load(
        x1_ptr + sample[:, None] * x1_s0 + channel[:, None] * x1_s1 + k1[None, :] * x1_s2,
        mask=r_ok[:, None] & (k1[None, :] < d1), other=0,
    )  # fmt: skip
    x2 = tl.load(
        x2_ptr + sample[:, None] * x2_s0 + channel[:, None] * x2_s1 + k2[None, :] * x2_s2,
        mask=r_ok[:, None] & (k2[None, :] < d2), other=0,
    )  # fmt: skip
    acc = tl.zeros([BLOCK_R, BLOCK_D3], dtype=out_ptr.dtype.element_ty)
    for p0 in range(0, points, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        p_ok = p < points
        s1 = tl.load(s1_ptr + k1[:, None] * s1_s0 + p[None, :] * s1_s1, mask=(k1[:, None] < d1) & p_ok[None, :], other=0)
        s2 = tl.load(s2_ptr + k2[:, None] * s2_s0 + p[None, :] * s2_s1, mask=(k2[:, None] < d2) & p_ok[None, :], other=0)
        a = tl.load(a_ptr + p[:, None] * a_s0 + k3[None, :] * a_s1, mask=p_ok[:, None] & (k3[None, :] < d3), other=0)
        values = tl.dot(x1, s1, input_precision="ieee") * tl.dot(x2, s2, input_precision="ieee")
        acc += tl.dot(values, a, input_precision="ieee")
    tl.store(out_ptr + r[:, None] * d3 + k3[None, :], acc, mask=r_ok[:, None] & (k3[None, :] < d3))


def _blocks(num_rows: int, d1: int, d2: int, d3: int, points: int) -> tuple[int, ...]:
    """(BLOCK_R, BLOCK_D1, BLOCK_D2, BLOCK_D3, BLOCK_P): tl.dot needs every side >= 16."""
    from .cg_triton import INTERPRETED

    sides = [max(16, triton.next_power_of_2(d)) for d in (d1, d2, d3)]
    if INTERPRETED:  # every operation has a fixed cost: one tile of many rows, all points
        return max(16, min(triton.next_power_of_2(num_rows), 1024)), *sides, max(16, triton.next_power_of_2(points))
    # Chunks of 16 grid points where a side is 64 or more, which sm_90 compiles without
    # register spills (scripts/triton_report.py; BENCHMARKS.md).
    return 32, *sides, 16 if max(sides) >= 64 else 32


def _launch(x1: Tensor, x2: Tensor, s1: Tensor, s2: Tensor, a3: Tensor) -> Tensor:
    num, channels = x1.shape[0], max(x1.shape[1], x2.shape[1])
    out = torch.empty(num, channels, a3.shape[1], dtype=x1.dtype, device=x1.device)
    num_rows = num * channels
    if num_rows == 0:
        return out
    # A channel axis of size 1 broadcasts: stride 0.
    x1_s1 = x1.stride(1) if x1.shape[1] > 1 else 0
    x2_s1 = x2.stride(1) if x2.shape[1] > 1 else 0
    block_r, block_d1, block_d2, block_d3, block_p = _blocks(num_rows, s1.shape[0], s2.shape[0], a3.shape[1], a3.shape[0])
    _grid_product_kernel[(triton.cdiv(num_rows, block_r),)](
        x1, x1.stride(0), x1_s1, x1.stride(2), x2, x2.stride(0), x2_s1, x2.stride(2),
        s1, s1.stride(0), s1.stride(1), s2, s2.stride(0), s2.stride(1), a3, a3.stride(0), a3.stride(1),
        out, num_rows, channels, s1.shape[0], s2.shape[0], a3.shape[1], a3.shape[0],
        BLOCK_R=block_r, BLOCK_D1=block_d1, BLOCK_D2=block_d2, BLOCK_D3=block_d3, BLOCK_P=block_p,
    )  # fmt: skip
    return out


@torch.library.custom_op("equinet::gaunt_grid_product", mutates_args=())
def gaunt_grid_product(x1: Tensor, x2: Tensor, s1: Tensor, s2: Tensor, a3: Tensor) -> Tensor:
    """``((x1 @ S1) * (x2 @ S2)) @ A3`` per row: ``x1 [N, C or 1, D1]``, ``x2 [N, C or 1, D2]``,
    ``s1 [D1, P]``, ``s2 [D2, P]``, ``a3 [P, D3]`` → ``[N, C, D3]``."""
    check_device(x1)
    return _launch(x1, x2, s1, s2, a3)


@gaunt_grid_product.register_fake
def _(x1, x2, s1, s2, a3):
    return x1.new_empty(x1.shape[0], max(x1.shape[1], x2.shape[1]), a3.shape[1])


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad):
    x1, x2, s1, s2, a3 = ctx.saved_tensors
    synthesis_of_grad = a3.T  # [D3, P]
    grad1 = grad2 = None
    if ctx.needs_input_grad[0]:
        grad1 = gaunt_grid_product(x2, grad, s2, synthesis_of_grad, s1.T).sum_to_size(x1.shape)
    if ctx.needs_input_grad[1]:
        grad2 = gaunt_grid_product(x1, grad, s1, synthesis_of_grad, s2.T).sum_to_size(x2.shape)
    return grad1, grad2, None, None, None


gaunt_grid_product.register_autograd(_backward, setup_context=_setup_context)
