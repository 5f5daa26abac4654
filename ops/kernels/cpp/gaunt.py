"""The Gaunt sphere-grid product (:class:`~equinet.ops.GauntTensorProduct`) on the fused C++
CPU kernel ``gaunt_cpp.cpp`` (``backend="cpp"``): an engine of
:class:`~equinet.ops.gaunt.product.GauntProduct`.

Per sample, the kernel reads the features in e3nn's layout through index tables, takes four
channels at a time to the northern half of the grid (mirror-even and mirror-odd parts, as the
torch path does), multiplies pairs of them pointwise, projects back and writes e3nn's layout,
so no grid value and no permuted copy of a feature ever reaches memory. The same kernel, with
other tables, gives the gradients in one pass.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from ...gaunt.matrices import bracket_synthesis, cached_matrices, components, grid_analysis, grid_synthesis, num_values
from ...gaunt.matrices import transform_size
from .build import load_cpp

__all__ = ["CppGauntEngine"]


def _padded(matrix: torch.Tensor) -> torch.Tensor:
    """``matrix`` with zero columns appended to a multiple of 16 (one vector of the C++ kernel)."""
    return torch.nn.functional.pad(matrix, (0, -matrix.shape[1] % 16))


@lru_cache(maxsize=None)
def _cpp_synthesis(degrees: tuple[int, ...], band_limit: int, role: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The synthesis matrices of :func:`~equinet.ops.gaunt.transforms.factor` on the grid (even, odd components), padded."""
    if role is None:
        return tuple(_padded(m) for m in grid_synthesis(degrees, band_limit))
    return tuple(_padded(m) for m in bracket_synthesis(degrees, band_limit, role))


@lru_cache(maxsize=None)
def _cpp_analysis(degrees: tuple[int, ...], band_limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The analysis matrices of :func:`~equinet.ops.gaunt.transforms.from_grid` (even, odd components), padded."""
    return tuple(_padded(m) for m in grid_analysis(degrees, band_limit))


def _cpp_tables(layout, s: torch.Tensor, matrices: tuple[torch.Tensor, torch.Tensor], swap: bool = False):
    """A feature's description for the C++ kernel, ``[positions, matrix, scales]`` per half (even,
    then odd components; ``swap`` exchanges them): the positions ``[channels, K]`` of its components
    in a row of e3nn's layout, the half's matrix, its scales ``[channels or 1, K]``."""
    n_even = components(layout.degrees)[1]
    halves = [slice(0, n_even), slice(n_even, None)]
    if swap:
        matrices, halves = matrices[::-1], halves[::-1]
    positions = layout.gather.view(layout.channels, layout.dim)
    return [t for half, m in zip(halves, matrices) for t in (positions[:, half].contiguous(), m, s[:, half].contiguous())]


def _cpp_pass(factors: list, products: list, size: int, bracket: bool) -> list:
    """One pass of the C++ kernel over the batch.

    ``factors``: ``(x [N, dim], s [C or 1, D], layout, role)``, the functions taken to the grid
    (``role`` as in :func:`equinet.ops.gaunt.transforms.factor`); ``products``: ``(first, second, (s, layout), sign, out, raw)``,
    each writing ``out = sign * s * G(f_first, f_second)`` in the layout (``G`` the Gaunt product, or
    the bracket with ``f_first`` as rotations and ``f_second`` as gradients; summed over the channels
    for a one-channel layout) if ``out`` is given. Returns, per product, the gradient of its scales
    ``sum_n raw * sign * G`` ``[channels, D]`` if ``raw`` is given, else None."""
    empty = factors[0][0].new_empty(0)
    factor_tables = []
    for x, s, layout, role in factors:
        synthesis = cached_matrices(_cpp_synthesis, layout.degrees, size, role, dtype=x.dtype, device=x.device)
        # The bracket's halves (a_j, b_j) of f_first meet (b_j, a_j) of f_second (see
        # equinet.ops.gaunt.transforms.combine).
        factor_tables.append([x.contiguous(), *_cpp_tables(layout, s, synthesis, swap=role == "gradient")])
    product_tables, weight_grads = [], []
    for _, _, (s, layout), _, out, raw in products:
        tables = _cpp_tables(layout, s, cached_matrices(_cpp_analysis, layout.degrees, size, dtype=s.dtype, device=s.device))
        grads = [tables[2].new_zeros(tables[2].shape), tables[5].new_zeros(tables[5].shape)] if raw is not None else None
        weight_grads.append(grads)
        raw = empty if raw is None else raw.contiguous()
        product_tables.append([*tables, empty if out is None else out, raw, *(grads or (empty, empty))])
    channels = max(layout.channels for _, _, layout, _ in factors)
    load_cpp().gaunt_product(
        factor_tables, product_tables, [p[0] for p in products], [p[1] for p in products], [float(p[3]) for p in products],
        channels, 3 if bracket else 1, num_values("grid", size),
    )  # fmt: skip
    return [None if grads is None else torch.cat(grads, dim=1) for grads in weight_grads]


def _fused_backward(x_a, x_b, s_a, s_b, s_o, grad, layouts, method, bracket, needs) -> list:
    """The gradients of the product in one pass of the C++ kernel, no graph."""
    a, b, o = layouts
    first, second = ("rotation", "gradient") if bracket else (None, None)
    functions = {"f_a": (x_a, s_a, a, first), "f_b": (x_b, s_b, b, first), "g_o": (grad, s_o, o, second)}
    functions["g_b"] = (x_b, s_b, b, second) if bracket else functions["f_b"]  # the product: f_b
    names, products, grads, wanted = [], [], [None] * 5, []
    for i, (f, g, output, x, sign) in enumerate(
        (("f_b", "g_o", (s_a, a), x_a, 1.0), ("f_a", "g_o", (s_b, b), x_b, -1.0 if bracket else 1.0),
         ("f_a", "g_b", (s_o, o), grad, 1.0))
    ):  # fmt: skip
        needs_x, needs_s = i < 2 and needs[i], needs[i + 2]
        if not (needs_x or needs_s):
            continue
        names += [name for name in (f, g) if name not in names]
        grads[i] = torch.empty(x.shape, dtype=x.dtype, device=x.device) if needs_x else None
        products.append((names.index(f), names.index(g), output, sign, grads[i], x if needs_s else None))
        wanted.append(i)
    size = transform_size(method, a.degrees, b.degrees, o.degrees)
    for i, weight_grad in zip(wanted, _cpp_pass([functions[name] for name in names], products, size, bracket)):
        grads[i + 2] = weight_grad
    return grads


class CppGauntEngine:
    """The engine of :class:`~equinet.ops.gaunt.product.GauntProduct` on the C++ kernel
    (``method="grid"`` only, CPU tensors of float32 or float64)."""

    differentiable = False  # GauntProduct supplies the derivatives
    fused_backward = staticmethod(_fused_backward)

    @staticmethod
    def forward(x_a, x_b, s_a, s_b, s_o, layouts, method: str, bracket: bool, out: torch.Tensor) -> None:
        """Writes the product into ``out [N, dim_o]``."""
        _check_inputs(x_a, x_b, s_a.dtype)
        a, b, o = layouts
        size = transform_size(method, a.degrees, b.degrees, o.degrees)
        first, second = ("rotation", "gradient") if bracket else (None, None)
        _cpp_pass([(x_a, s_a, a, first), (x_b, s_b, b, second)], [(0, 1, (s_o, o), 1.0, out, None)], size, bracket)


def _check_inputs(x1: torch.Tensor, x2: torch.Tensor, dtype: torch.dtype) -> None:
    """One-line errors for inputs that the C++ kernel cannot take (``dtype``: the weights')."""
    if x1.device.type != "cpu" or x2.device.type != "cpu":
        raise ValueError(f"backend='cpp' runs on the CPU, but the inputs are on {x1.device}; use backend='triton' on a GPU")
    if dtype not in (torch.float32, torch.float64) or not x1.dtype == x2.dtype == dtype:
        raise ValueError(
            f"backend='cpp' needs float32 or float64 inputs of the weights' dtype, got {x1.dtype} and {x2.dtype} "
            f"with {dtype} weights; cast the inputs or the module (module.to(dtype))"
        )
