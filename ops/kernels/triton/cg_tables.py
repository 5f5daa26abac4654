"""Sparse Clebsch–Gordan tables that drive the Triton kernels of the channel-wise convolution.

The convolution is trilinear in the node features ``x [N, D1]``, the edge attributes
``y [E, D2]`` and the edge weights ``w [E, W]``. With ``g [N, Dout]`` standing for a
gradient at the receivers, every kernel computes one partial derivative of the form

    F(x, y, w, g) = sum_e sum_(path k, u, m1, m2, mo) c(k, m1, m2, mo)
                    * x[src e, x_k(m1) + u] * y[e, y_k(m2)] * w[e, w_k + u] * g[dst e, o_k(mo) + u]

where ``c = sqrt(2 l_out + 1) * wigner_3j(l1, l2, l_out)[m1, m2, mo]`` over the nonzero
coefficients only. Node features and outputs are in the ``ir_mul`` layout
(:mod:`.layout`): ``x_k(m1) = offset + m1 * mul``, each component a contiguous run of the
``mul`` channels, so that every operand of a kernel reads or writes runs ``start + u``. The
four derivatives are:

===============  =====================  ==========================  ===================
table            one row per            entries of a row            computes
===============  =====================  ==========================  ===================
``conv``         output row (k, mo)     (m1, m2) of path k          dF/dg, at receivers
``transpose``    input row (i, m1)      (k, m2, mo), k leaving i    dF/dx, at senders
``attrs``        edge attribute b       (k, m1, mo), k using b      dF/dy, per edge
``weights``      path k                 (m1, m2, mo) of path k      dF/dw, per edge
===============  =====================  ==========================  ===================

A "row" is one output column family: its elements are ``start + u`` for the channels
``u < mul`` (for ``attrs`` the channels are summed, so a row is one column). Each table is
padded to the longest row, so a kernel can load a block of rows times a block of entries as
one 2D tile; padding entries have ``count`` masking them out and a coefficient of 0.

:func:`trilinear_tables` builds the tables of any trilinear form of this shape from its
column families and nonzero coefficients; :func:`cg_kernel_tables` gives it those of the CG
product, and :mod:`.so2_ops` those of the SO(2) convolution's steps.
:func:`channel_alignment` is the alignment of the channel runs, which the kernels promise
Triton so that they load and store them as vectors.

Tables (all int32 except the coefficients, which take the default dtype):

* ``*_rows [R, F]`` row fields, ``*_entries [R, J, G]`` entry fields, ``*_coeffs [R, J]``.
* ``conv`` and ``transpose`` share one layout, so one kernel serves both:
  rows ``(out_start, mul, count)``, entries ``(a_start, y_index, w_start)``
  where ``a`` is the gathered operand (``x`` for conv, ``g`` for transpose).
* ``attrs``: rows ``(count,)`` (row ``b`` is column ``b`` of ``y``), entries
  ``(x_start, g_start, w_start, mul)``.
* ``weights``: rows ``(w_start, mul, count)``, entries ``(x_start, y_index, g_start)``.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3

__all__ = ["TABLE_NAMES", "cg_kernel_tables", "channel_alignment", "trilinear_tables"]

# The order in which the tables travel to the custom ops (one flat list of tensors).
TABLE_NAMES = tuple(
    f"{kind}_{part}" for kind in ("conv", "transpose", "attrs", "weights") for part in ("rows", "entries", "coeffs")
)


def _pad(rows: list[list[int]], entries: list[list[tuple[tuple[int, ...], float]]], num_fields: int):
    """Stack ragged per-row entry lists into ``[R, J, G]`` fields and ``[R, J]`` coefficients."""
    longest = max(1, max((len(row) for row in entries), default=0))  # J >= 1: no zero-size blocks
    padding = ((0,) * num_fields, 0.0)
    padded = [row + [padding] * (longest - len(row)) for row in entries]
    fields = torch.tensor([[entry for entry, _ in row] for row in padded], dtype=torch.int32)
    coeffs = torch.tensor([[c for _, c in row] for row in padded], dtype=torch.float64)
    row_fields = torch.tensor(rows, dtype=torch.int32).reshape(len(rows), -1)
    return row_fields, fields, coeffs


def trilinear_tables(
    in_families: list[tuple[int, int]],
    out_families: list[tuple[int, int]],
    weight_groups: list[tuple[int, int]],
    y_dim: int,
    terms: list[tuple[int, int, int, int, float]],
) -> dict[str, torch.Tensor]:
    """The four tables of the module docstring for any trilinear form of that shape.

    Args:
        in_families: ``(start, mul)`` of every column family of ``x`` (its columns
            ``start + u`` for ``u < mul``); each gets a ``transpose`` row.
        out_families: the same for the output; each gets a ``conv`` row.
        weight_groups: ``(start, mul)`` of every group of weight columns; each gets a ``weights`` row.
        y_dim: number of columns of ``y``; each gets an ``attrs`` row.
        terms: ``(in family, y column, weight group, out family, c)``, one per nonzero
            coefficient; the three families of a term have the same ``mul``.

    Coefficients are returned in torch's default dtype.
    """
    conv_entries: list[list] = [[] for _ in out_families]
    transpose_entries: list[list] = [[] for _ in in_families]
    attrs_entries: list[list] = [[] for _ in range(y_dim)]
    weights_entries: list[list] = [[] for _ in weight_groups]
    for i, b, k, o, c in terms:
        (x_start, _), (o_start, _), (w_start, mul) = in_families[i], out_families[o], weight_groups[k]
        conv_entries[o].append(((x_start, b, w_start), c))
        transpose_entries[i].append(((o_start, b, w_start), c))
        attrs_entries[b].append(((x_start, o_start, w_start, mul), c))
        weights_entries[k].append(((x_start, b, o_start), c))

    tables: dict[str, torch.Tensor] = {}
    dtype = torch.get_default_dtype()
    for kind, rows, entries, num_fields in (
        ("conv", [list(family) for family in out_families], conv_entries, 3),
        ("transpose", [list(family) for family in in_families], transpose_entries, 3),
        ("attrs", [[] for _ in range(y_dim)], attrs_entries, 4),
        ("weights", [list(group) for group in weight_groups], weights_entries, 3),
    ):
        rows = [row + [len(row_entries)] for row, row_entries in zip(rows, entries)]  # count is the last row field
        row_fields, entry_fields, coeffs = _pad(rows, entries, num_fields)
        tables[f"{kind}_rows"] = row_fields
        tables[f"{kind}_entries"] = entry_fields
        tables[f"{kind}_coeffs"] = coeffs.to(dtype)
    return tables


def channel_alignment(tables: dict[str, torch.Tensor], largest: int = 16) -> int:
    """The largest power of two, up to ``largest``, that divides every start and multiplicity
    in the four tables of :func:`trilinear_tables`.

    The kernels tell Triton so (``tl.multiple_of``): every run of channels ``start + u`` and
    every channel mask ``u < mul`` then comes in aligned groups of that many channels, which
    a GPU loads and stores as 16-byte vectors. Padding entries hold zeros, which every power
    of two divides.
    """
    values = torch.cat([
        tables["conv_rows"][:, :2].flatten(), tables["conv_entries"][..., [0, 2]].flatten(),
        tables["transpose_rows"][:, :2].flatten(), tables["transpose_entries"][..., [0, 2]].flatten(),
        tables["attrs_entries"].flatten(),
        tables["weights_rows"][:, :2].flatten(), tables["weights_entries"][..., [0, 2]].flatten(),
    ])  # fmt: skip
    align = largest
    while align > 1 and bool((values % align).any()):
        align //= 2
    return align


def cg_kernel_tables(
    irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, irreps_out: o3.Irreps, instructions: list[tuple[int, int, int]]
) -> dict[str, torch.Tensor]:
    """The tables of the channel-wise CG product (:func:`trilinear_tables`), node features and
    outputs in the ``ir_mul`` layout.

    Args:
        irreps_in1: node feature irreps (any multiplicities).
        irreps_in2: edge attribute irreps, multiplicity 1 each.
        irreps_out: one segment ``mul1 x ir_out`` per path, in path order.
        instructions: ``(i1, i2, i_out)`` per path, ``i_out`` counting up from 0.

    Coefficients are computed in float64 and returned in torch's default dtype.
    """
    offsets1 = [irreps_in1[:i].dim for i in range(len(irreps_in1))]
    offsets2 = [irreps_in2[:i].dim for i in range(len(irreps_in2))]
    offsets_out = [irreps_out[:i].dim for i in range(len(irreps_out))]
    weight_starts = [sum(irreps_in1[i1].mul for i1, _, _ in instructions[:k]) for k in range(len(instructions))]

    # Column families: (segment i, m1) of x, including segments that no path leaves (their
    # transpose rows stay empty and the kernel writes zeros), and (path k, mo) of the output.
    in_family, in_families = {}, []
    for i, (mul, ir) in enumerate(irreps_in1):
        for m1 in range(ir.dim):
            in_family[i, m1] = len(in_families)
            in_families.append((offsets1[i] + m1 * mul, mul))
    out_family, out_families = {}, []
    for k, (i1, _, i_out) in enumerate(instructions):
        mul = irreps_in1[i1].mul
        for mo in range(irreps_out[i_out].ir.dim):
            out_family[k, mo] = len(out_families)
            out_families.append((offsets_out[i_out] + mo * mul, mul))
    weight_groups = [(weight_starts[k], irreps_in1[i1].mul) for k, (i1, _, _) in enumerate(instructions)]

    # Every nonzero coefficient once; e3nn's zeros are exact zeros.
    terms = []
    for k, (i1, i2, i_out) in enumerate(instructions):
        l1, l2, l_out = irreps_in1[i1].ir.l, irreps_in2[i2].ir.l, irreps_out[i_out].ir.l
        block = o3.wigner_3j(l1, l2, l_out, dtype=torch.float64) * math.sqrt(2 * l_out + 1)
        for m1, m2, mo in block.nonzero().tolist():
            terms.append((in_family[i1, m1], offsets2[i2] + m2, k, out_family[k, mo], block[m1, m2, mo].item()))
    return trilinear_tables(in_families, out_families, weight_groups, irreps_in2.dim, terms)
