"""The fused CG convolution as ``torch.library`` operators, differentiable to any order.

The convolution is trilinear in the node features ``x``, edge attributes ``y`` and edge
weights ``w`` (see :mod:`equinet.ops.kernels.triton.cg_tables`): with ``F(x, y, w, g)`` the
scalar that pairs it with a receiver-side ``g``, the four operators are the partial
derivatives of ``F``:

=================================  ==============================  ==============
operator                           is                              shape
=================================  ==============================  ==============
``equinet::cg_conv``               ``dF/dg (x, y, w)``, the conv   ``[N, Dout]``
``equinet::cg_conv_transpose``     ``dF/dx (g, y, w)``             ``[N, D1]``
``equinet::cg_conv_grad_attrs``    ``dF/dy (x, w, g)``             ``[E, D2]``
``equinet::cg_conv_grad_weights``  ``dF/dw (x, y, g)``             ``[E, W]``
=================================  ==============================  ==============

Each is linear in each of its three tensor inputs, so the derivative of any of them is
another of the four with the incoming gradient put in place of one input: the autograd
formulas below close over the set, and the second derivative that force training needs
(or any higher one) is again these kernels.

They are ``torch.library.custom_op``s with ``register_fake`` (shapes only) and
``register_autograd``, so ``torch.compile``, ``make_fx`` and ``torch.export`` trace them
as single opaque nodes, also on a machine without a GPU and under ``TRITON_INTERPRET=1``
(why not ``triton_op``: BENCHMARKS.md). A program that loads an exported graph with these ops
must import :mod:`equinet.ops.kernels.triton.cg_ops` first, which registers them.

Common arguments:

* ``graph``: ``[src, dst, order_by_dst, ptr_by_dst, order_by_src, ptr_by_src, src_by_dst,
  dst_by_src]`` from :func:`edge_graph` (edge endpoints, both CSR orders,
  and the far ends in those orders, so that a kernel reads an edge and its far end at once).
* ``tables``: the tables of :func:`~equinet.ops.kernels.triton.cg_tables.cg_kernel_tables` in the
  order of ``TABLE_NAMES``, coefficients in the dtype of the features.
* ``dims``: ``[D1, D2, W, Dout, max_mul, align]`` (feature sizes, the largest multiplicity of
  x and the tables' :func:`~equinet.ops.kernels.triton.cg_tables.channel_alignment`).

Node features and outputs are in the tables' ``ir_mul`` layout (:mod:`.layout`);
:class:`TritonChannelwise` permutes e3nn's ``mul_ir`` at its boundary.
"""

from __future__ import annotations

import functools

import torch
from e3nn import o3

from . import cg_triton
from .cg_tables import TABLE_NAMES, cg_kernel_tables, channel_alignment
from ..layout import inverse_permutation, ir_mul_columns

__all__ = ["TritonChannelwise", "csr_order", "edge_graph"]

Tensor = torch.Tensor


def check_device(t: Tensor) -> None:
    if t.device.type != "cuda" and not cg_triton.INTERPRETED:
        raise RuntimeError(
            f"backend='triton' needs an NVIDIA GPU (tensors are on {t.device.type}); use backend='torch' on the CPU, "
            "or set TRITON_INTERPRET=1 in the environment to run the kernels in Triton's interpreter (for testing)"
        )


@torch.library.custom_op("equinet::cg_conv", mutates_args=())
def cg_conv(x: Tensor, y: Tensor, w: Tensor, graph: list[Tensor], tables: list[Tensor], dims: list[int]) -> Tensor:
    """``out[i] = sum_{e: dst e = i} TP(x[src e], y[e], w[e])`` → ``[N, Dout]``."""
    check_device(x)
    _, _, order, ptr, _, _, src_by_dst, _ = graph
    return cg_triton.gather_product_scatter(x, y, w, src_by_dst, order, ptr, *tables[0:3], dims[3], dims[4], dims[5])


@torch.library.custom_op("equinet::cg_conv_transpose", mutates_args=())
def cg_conv_transpose(
    g: Tensor, y: Tensor, w: Tensor, graph: list[Tensor], tables: list[Tensor], dims: list[int]
) -> Tensor:
    """``out[j] = sum_{e: src e = j} TP^T(g[dst e], y[e], w[e])`` → ``[N, D1]``."""
    check_device(g)
    _, _, _, _, order, ptr, _, dst_by_src = graph
    return cg_triton.gather_product_scatter(g, y, w, dst_by_src, order, ptr, *tables[3:6], dims[0], dims[4], dims[5])


@torch.library.custom_op("equinet::cg_conv_grad_attrs", mutates_args=())
def cg_conv_grad_attrs(
    x: Tensor, w: Tensor, g: Tensor, graph: list[Tensor], tables: list[Tensor], dims: list[int]
) -> Tensor:
    """``dF/dy`` → ``[E, D2]``."""
    check_device(x)
    return cg_triton.edge_attrs_contraction(x, w, g, graph[0], graph[1], *tables[6:9], dims[4], dims[5])


@torch.library.custom_op("equinet::cg_conv_grad_weights", mutates_args=())
def cg_conv_grad_weights(
    x: Tensor, y: Tensor, g: Tensor, graph: list[Tensor], tables: list[Tensor], dims: list[int]
) -> Tensor:
    """``dF/dw`` → ``[E, W]``."""
    check_device(x)
    return cg_triton.edge_weights_contraction(x, y, g, graph[0], graph[1], *tables[9:12], dims[2], dims[4], dims[5])


@cg_conv.register_fake
def _(x, y, w, graph, tables, dims):
    return x.new_empty(graph[3].shape[0] - 1, dims[3])


@cg_conv_transpose.register_fake
def _(g, y, w, graph, tables, dims):
    return g.new_empty(graph[5].shape[0] - 1, dims[0])


@cg_conv_grad_attrs.register_fake
def _(x, w, g, graph, tables, dims):
    return x.new_empty(graph[0].shape[0], dims[1])


@cg_conv_grad_weights.register_fake
def _(x, y, g, graph, tables, dims):
    return x.new_empty(graph[0].shape[0], dims[2])


def _setup_context(ctx, inputs, output):
    first, second, third, graph, tables, dims = inputs
    ctx.save_for_backward(first, second, third)
    ctx.graph, ctx.tables, ctx.dims = graph, tables, dims


def _backward(ctx, h, formulas):
    """The gradients of the three tensor inputs: ``formula(first, second, third, h, graph, tables, dims)``
    for each input that needs one, ``h`` being the gradient of the output."""
    saved = ctx.saved_tensors
    grads = [
        formula(*saved, h, ctx.graph, ctx.tables, ctx.dims) if needed else None
        for formula, needed in zip(formulas, ctx.needs_input_grad[:3])
    ]
    # Tensor-list inputs take a list of gradients (the graph and tables have none).
    return (*grads, [None] * len(ctx.graph), [None] * len(ctx.tables), None)


# Per operator, its derivative wrt each of its three inputs, contracted with h: the
# operator is F's derivative wrt one argument, so this is F's second derivative wrt that
# argument and the input, i.e. F's first derivative wrt the input with h in that argument.
_FORMULAS = {
    cg_conv: (
        lambda x, y, w, h, *c: cg_conv_transpose(h, y, w, *c),
        lambda x, y, w, h, *c: cg_conv_grad_attrs(x, w, h, *c),
        lambda x, y, w, h, *c: cg_conv_grad_weights(x, y, h, *c),
    ),
    cg_conv_transpose: (
        lambda g, y, w, h, *c: cg_conv(h, y, w, *c),
        lambda g, y, w, h, *c: cg_conv_grad_attrs(h, w, g, *c),
        lambda g, y, w, h, *c: cg_conv_grad_weights(h, y, g, *c),
    ),
    cg_conv_grad_attrs: (
        lambda x, w, g, h, *c: cg_conv_transpose(g, h, w, *c),
        lambda x, w, g, h, *c: cg_conv_grad_weights(x, h, g, *c),
        lambda x, w, g, h, *c: cg_conv(x, h, w, *c),
    ),
    cg_conv_grad_weights: (
        lambda x, y, g, h, *c: cg_conv_transpose(g, y, h, *c),
        lambda x, y, g, h, *c: cg_conv_grad_attrs(x, h, g, *c),
        lambda x, y, g, h, *c: cg_conv(x, y, h, *c),
    ),
}

for _op, _formulas in _FORMULAS.items():
    _op.register_autograd(functools.partial(_backward, formulas=_formulas), setup_context=_setup_context)


def csr_order(index: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """Edges sorted by ``index`` (stable) and each node's ``[ptr[n], ptr[n+1])`` in that order."""
    order = torch.argsort(index, stable=True)
    nodes = torch.arange(num_nodes + 1, device=index.device, dtype=index.dtype)
    return order, torch.searchsorted(index[order], nodes)


def edge_graph(sender: Tensor, receiver: Tensor, num_senders: int, num_receivers: int) -> list[Tensor]:
    """The ``graph`` argument of the operators for the edges ``sender → receiver``.

    Indices must lie in range; they are not checked (that would cost a device sync).
    """
    sender, receiver = sender.contiguous(), receiver.contiguous()
    (by_dst, ptr_dst), (by_src, ptr_src) = csr_order(receiver, num_receivers), csr_order(sender, num_senders)
    return [sender, receiver, by_dst, ptr_dst, by_src, ptr_src, sender[by_dst], receiver[by_src]]


class TritonChannelwise(torch.nn.Module):
    """The ``backend="triton"`` implementation behind :class:`~equinet.ops.CGConvolution`
    and :class:`~equinet.ops.ChannelwiseTensorProduct` (same call as the torch backend).

    Holds the CG tables as buffers (moved and cast with the module). Called with
    ``sender``/``receiver`` it is the convolution ``[N, D1] → [num_receivers, Dout]``;
    without them, the plain product ``[E, D1] → [E, Dout]`` (edge e reads and writes row e).
    The kernels compute in the ``ir_mul`` layout (:mod:`.layout`): features and outputs are
    permuted at the boundary, on node rows in the convolution (on edge rows in the product).
    """

    def __init__(self, irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, irreps_out: o3.Irreps, instructions):
        super().__init__()
        tables = cg_kernel_tables(irreps_in1, irreps_in2, irreps_out, instructions)
        for name, table in tables.items():
            self.register_buffer(name, table, persistent=False)
        self.register_buffer("in1_columns", ir_mul_columns(irreps_in1), persistent=False)
        self.register_buffer("out_columns", inverse_permutation(ir_mul_columns(irreps_out)), persistent=False)
        weight_numel = sum(irreps_in1[i1].mul for i1, _, _ in instructions)
        max_mul = max(mul for mul, _ in irreps_in1)
        self._dims = [irreps_in1.dim, irreps_in2.dim, weight_numel, irreps_out.dim, max_mul, channel_alignment(tables)]

    def forward(
        self,
        x1: Tensor,
        x2: Tensor,
        weights: Tensor,
        sender: Tensor | None = None,
        receiver: Tensor | None = None,
        num_receivers: int = 0,
    ) -> Tensor:
        if not x1.dtype == x2.dtype == weights.dtype:
            raise ValueError(
                f"backend='triton' needs one dtype for all inputs, got {x1.dtype}, {x2.dtype} and {weights.dtype}"
            )
        if sender is None:
            rows = torch.arange(x2.shape[0], device=x2.device)
            ptr = torch.arange(x2.shape[0] + 1, device=x2.device)
            graph = [rows, rows, rows, ptr, rows, ptr, rows, rows]
        else:
            graph = edge_graph(sender, receiver, x1.shape[0], num_receivers)
        tables = [getattr(self, name) for name in TABLE_NAMES]
        tables = [t.to(x1.dtype) if t.is_floating_point() else t for t in tables]
        out = cg_conv(x1.index_select(1, self.in1_columns), x2, weights, graph, tables, self._dims)
        return out.index_select(1, self.out_columns)
