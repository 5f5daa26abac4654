"""SO(2) convolution of eSCN (Passaro & Zitnick, ICML 2023), as used by EquiformerV2.

An SO(3) convolution couples sender features ``x`` with the spherical harmonics of the
edge. In the frame where the edge lies along the primary axis ŷ (:mod:`.wigner`), the
harmonics are zero except at ``m = 0``, and the product with per-edge weights reduces
to a map that only mixes components of equal ``|m|``:

    message = D(R)^T · SO2(D(R) · x[sender]),      R r̂ = ŷ,

where ``SO2`` commutes with rotations about ŷ. For each ``m > 0`` a rotation about ŷ
turns the pair ``(x_{+m}, x_{-m})`` of every degree like a complex number, so ``SO2``
is, per ``m``, a complex linear map across degrees: a "real" part (``+m → +m``,
``-m → -m``) and an "imaginary" part (``∓m → ±m``). Reflections through planes that
contain ŷ then decide which part a pair of irreps may use: with the class
``σ = p (-1)^l`` of an irrep (``+1`` for ``0e, 1o, 2e, ..``, ``-1`` for ``0o, 1e, ..``),
irreps of equal class couple through the real part and irreps of opposite class through
the imaginary part, and at ``m = 0`` only irreps of equal class couple. So every pair of
irreps has exactly one real weight per ``m`` and channel. We apply it uniformly by
rotating the ``(+m, -m)`` pairs of class ``-1`` irreps by a quarter turn (``J``:
``(x_{+m}, x_{-m}) → (x_{-m}, -x_{+m})``) on the way into the edge frame and back on
the way out; ``J`` is folded into their rotation matrices.

Channels are kept (the "uvu" analogue of :class:`~equinet.ops.CGConvolution`): for each
``m <= m_max``, channel ``u`` and output irrep ``o``,

    y[o, ±m, u] = 1/sqrt(n) · sum_i w[edge, m, o, i, u] · x̃[i, ±m, u]

with ``n`` the number of input irreps summed (unit-variance inputs and weights give
unit-variance outputs); components with ``|m| > m_max`` are dropped.

With ``m_max = l_max`` this is exactly the CG convolution with the edge spherical
harmonics of all degrees up to ``l_in + l_out`` (the number of weights per irrep pair,
``min(l_in, l_out) + 1`` or ``min(l_in, l_out)`` by class, is the number of CG paths
between them); :func:`so2_weights_from_cg` converts the weights. Its cost per edge and
channel is O(l_max^3) (rotations and map) instead of O(l_max^5) to O(l_max^6) for the CG
product; with a fixed ``m_max`` it is O(m_max l_max^2).
"""

from __future__ import annotations

import itertools
import math

import torch
from e3nn import o3

from .cg import CGConvolution, _as_irreps
from .wigner import edge_wigner_D

__all__ = ["SO2Convolution", "so2_weights_from_cg"]

BACKENDS = ("torch", "triton", "cpp")


def _node_irreps(irreps, name: str) -> o3.Irreps:
    """e3nn irreps, or ``(l_max, channels)`` for ``channels x (0e + 1o + 2e + ... up to l_max)``."""
    if isinstance(irreps, tuple) and len(irreps) == 2 and all(isinstance(n, int) and not isinstance(n, bool) for n in irreps):
        l_max, channels = irreps
        if l_max < 0 or channels < 1:
            raise ValueError(f"{name} as (l_max, channels) needs l_max >= 0 and channels >= 1, got {irreps!r}")
        return o3.Irreps([(channels, (l, (-1) ** l)) for l in range(l_max + 1)])
    return _as_irreps(irreps, name)


def _class(ir: o3.Irrep) -> int:
    """``+1`` for irreps with the parity of Y^l (``0e, 1o, 2e, ..``), ``-1`` for the others."""
    return ir.p * (-1) ** ir.l


class SO2Convolution(torch.nn.Module):
    """eSCN message-passing convolution: rotate to the edge frame → SO(2) linear map with
    per-edge weights → truncate to ``|m| <= m_max`` → rotate back → sum at the receivers.

    Args:
        irreps_in: irreps of the node features; every segment has the same multiplicity
            (the channels), any degrees and parities (e.g. ``32x0e+32x1o+32x2e``), or
            ``(l_max, channels)`` for ``channels x (0e + 1o + 2e + ...)`` up to ``l_max``.
        irreps_out: irreps of the output (same forms), same multiplicity as ``irreps_in``;
            ``None`` (the default) for ``irreps_in``.
        m_max: highest ``|m|`` kept in the edge frame; ``None`` keeps all (the exact
            equivalent of a CG convolution, see :func:`so2_weights_from_cg`).
        backend: ``"torch"`` (plain PyTorch), ``"triton"`` (the CG convolution's GPU
            kernels, :mod:`equinet.ops.kernels.so2_ops`) or ``"cpp"`` (one fused CPU kernel,
            compiled on first use, :mod:`equinet.ops.kernels.cpp_build`); same weights, same
            result.

    Attributes:
        weight_numel: per-edge weights per row, laid out ``[block, output irrep, input
            irrep, channel]``. The blocks: ``m = 0`` with the outputs and inputs of
            class ``+1``, then of class ``-1``; then ``m = 1 .. m_max`` with the outputs and
            inputs of degree ``>= m`` (irreps in the order of ``irreps_out`` /
            ``irreps_in``); ``blocks`` lists them as ``(m, outputs, inputs)``.

    Shapes: ``node_feats: [N, irreps_in.dim]``, ``edge_vec: [E, 3]`` (sender → receiver),
    ``edge_weights: [E, weight_numel]``, ``edge_index: [2, E]`` (row 0 senders, row 1
    receivers) → ``[N, irreps_out.dim]``.

    Example:
        >>> conv = SO2Convolution((6, 32), m_max=2)   # 32x0e+32x1o+...+32x6e in and out, eSCN's truncation
        >>> conv = SO2Convolution("8x0e+8x1o+8x2e", "8x0e+8x1o+8x2e", m_max=1)
        >>> out = conv(x, edge_vec, radial(edge_length), edge_index)   # radial: [E] → [E, conv.weight_numel]
    """

    def __init__(self, irreps_in, irreps_out=None, m_max: int | None = None, backend: str = "torch"):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.irreps_in = _node_irreps(irreps_in, "irreps_in")
        self.irreps_out = self.irreps_in if irreps_out is None else _node_irreps(irreps_out, "irreps_out")
        multiplicities = {mul for mul, _ in self.irreps_in} | {mul for mul, _ in self.irreps_out}
        if len(multiplicities) != 1:
            raise ValueError(
                f"every segment of irreps_in and irreps_out must have the same multiplicity (the channels, kept "
                f"by the convolution), got irreps_in '{self.irreps_in}' and irreps_out '{self.irreps_out}'"
            )
        self.channels = multiplicities.pop()
        self.l_max = max(ir.l for _, ir in self.irreps_in + self.irreps_out)
        if m_max is None:
            m_max = self.l_max
        if not isinstance(m_max, int) or m_max < 0:
            raise ValueError(f"m_max must be a non-negative integer or None, got {m_max!r}")
        self.m_max = min(m_max, self.l_max)

        ins = [ir for _, ir in self.irreps_in]
        outs = [ir for _, ir in self.irreps_out]
        self.blocks: list[tuple[int, list[int], list[int]]] = []
        for sign in (1, -1):
            o = [j for j, ir in enumerate(outs) if _class(ir) == sign]
            i = [j for j, ir in enumerate(ins) if _class(ir) == sign]
            if o and i:
                self.blocks.append((0, o, i))
        for m in range(1, self.m_max + 1):
            o = [j for j, ir in enumerate(outs) if ir.l >= m]
            i = [j for j, ir in enumerate(ins) if ir.l >= m]
            if o and i:
                self.blocks.append((m, o, i))
        reached = {j for _, o, _ in self.blocks for j in o}
        missing = [str(outs[j]) for j in range(len(outs)) if j not in reached]
        if missing:
            raise ValueError(
                f"output irreps {', '.join(missing)} of '{self.irreps_out}' receive nothing from irreps_in "
                f"'{self.irreps_in}' with m_max={self.m_max} (at m = 0 an irrep couples only to irreps of its class, "
                f"0e 1o 2e .. or 0o 1e 2o ..; at m >= 1 to any of degree >= m); remove them, add inputs or raise m_max"
            )
        self.weight_numel = self.channels * sum(len(o) * len(i) for _, o, i in self.blocks)

        # Edge-frame components kept per segment: |m| <= k, k the largest m of a block using it
        # (-1: none, an input that no output needs).
        self._k_in = [max((m for m, _, i in self.blocks if j in i), default=-1) for j in range(len(ins))]
        self._k_out = [max((m for m, o, _ in self.blocks if j in o), default=-1) for j in range(len(outs))]
        self._used = [j for j, k in enumerate(self._k_in) if k >= 0]
        self._block_sizes = [(len(o), len(i), 1 if m == 0 else 2) for m, o, i in self.blocks]
        scales = {(m, j): 1.0 / math.sqrt(len(i)) for m, _, i in self.blocks for j in i}
        # In the edge frame a segment's rows are m = 0, +1, -1, +2, -2, .. (each m contiguous),
        # made by rows (offsets from the middle) of D^l times factors: the quarter turn J for
        # class -1 and, on the way in, the 1/sqrt(n) of the block.
        self._rows_in = [_frame_rows(ir, k, lambda m, j=j: scales.get((m, j), 0.0)) for j, (ir, k) in enumerate(zip(ins, self._k_in))]
        self._rows_out = [_frame_rows(ir, k, lambda m: 1.0) for ir, k in zip(outs, self._k_out)]
        # Output segment j, component m comes from block b, row of its result (None: zero,
        # m = 0 of an output whose class has no input).
        source = {(j, m): (b, row) for b, (m, o, _) in enumerate(self.blocks) for row, j in enumerate(o)}
        self._output_sources = [[source.get((j, m)) for m in range(k + 1)] for j, k in enumerate(self._k_out)]
        # Edges per chunk: the largest product of the map, [out, in, ±, C] per edge, in ~1M numbers.
        self._edge_chunk = max(64, 2**20 // (self.channels * max(o * i * pair for o, i, pair in self._block_sizes)))
        if backend == "triton":
            from .kernels import triton_so2

            self.kernels = triton_so2(self)
        if backend == "cpp":
            self._cpp_tables = self._kernel_tables()

    def _frame_rotations(self, wigner: list[torch.Tensor], irreps: o3.Irreps, rows) -> list[torch.Tensor | None]:
        """Per segment ``[E, 2k+1, 2l+1]``: rows of D^l in edge-frame order, with their factors."""
        rotations = []
        for (_, ir), segment_rows in zip(irreps, rows):
            if segment_rows is None:
                rotations.append(None)
                continue
            offsets, factors = segment_rows
            d = wigner[ir.l]
            middle = (d.shape[1] - 1) // 2
            index = torch.tensor([middle + offset for offset in offsets], device=d.device)
            factor = torch.tensor(factors, dtype=d.dtype, device=d.device)
            rotations.append(d.index_select(1, index) * factor.unsqueeze(-1))
        return rotations

    def forward(
        self,
        node_feats: torch.Tensor,
        edge_vec: torch.Tensor,
        edge_weights: torch.Tensor,
        edge_index: torch.Tensor,
        wigner: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Convolve; ``wigner`` may pass ``edge_wigner_D(conv.l_max, edge_vec, conv.m_max)``
        when several convolutions share the edges (it is computed here otherwise)."""
        self._check(node_feats, edge_vec, edge_weights, edge_index, wigner)
        if wigner is None:
            wigner = edge_wigner_D(self.l_max, edge_vec, self.m_max)
        if self.backend == "triton":
            return self.kernels(node_feats, wigner[: self.l_max + 1], edge_weights, edge_index[0], edge_index[1])
        # Edge work runs channels-last, [E, component, C]: rotations are then plain batched
        # products and regrouping rows moves whole channel vectors. The layout changes at the
        # nodes, where it is cheap.
        x = _channels_last(node_feats, self.irreps_in, self._used)
        if self.backend == "cpp":
            self._check_cpp(node_feats, edge_weights, wigner)
            # The kernel works on whole 64-byte vectors of channels: pad them with zeros.
            pad = -self.channels % (64 // x.element_size())
            if pad:
                x = torch.nn.functional.pad(x, (0, pad))
                columns = edge_weights.reshape(len(edge_weights), self.weight_numel // self.channels, self.channels)
                edge_weights = torch.nn.functional.pad(columns, (0, pad)).flatten(1)
            entries = _wigner_entries(wigner, self.l_max, self.m_max)
            out = _SO2Kernel.apply(self, x, entries, edge_weights.contiguous(), edge_index.long().contiguous(), node_feats.shape[0])
            out = out[..., : self.channels]
        else:
            out = self._summed_messages(x, edge_index, edge_weights, wigner[: self.l_max + 1], node_feats.shape[0])
        return _channels_first(out, self.irreps_out)

    def _summed_messages(self, x, edge_index, edge_weights, wigner, num_nodes) -> torch.Tensor:
        """The torch path: ``[N, sum of 2l+1 over irreps_out, C]`` flattened, from channels-last ``x``."""
        out = x.new_zeros(num_nodes, self.irreps_out.dim // self.channels * x.shape[-1])
        # On the CPU the edges go in chunks small enough for their intermediates to stay in
        # cache (3x faster at l_max = 6); split, not sliced, so that backward stays one pass.
        # On the GPU, and when traced with symbolic sizes for export, all edges go at once.
        if x.is_cuda or isinstance(edge_index.shape[1], torch.SymInt):
            chunks = [(edge_index, edge_weights, *wigner)]
        else:
            chunk = self._edge_chunk
            chunks = zip(edge_index.split(chunk, dim=1), edge_weights.split(chunk), *(d.split(chunk) for d in wigner))
        for (sender, receiver), weights, *wigner_chunk in chunks:
            out.index_add_(0, receiver, self._messages(x, self._used, sender, weights, wigner_chunk))
        return out

    def _messages(self, x, used, sender, edge_weights, wigner) -> torch.Tensor:
        """Messages of a chunk of edges, channels-last ``[E, sum of 2l+1 over irreps_out, C]`` flattened."""
        num_edges, channels = sender.shape[0], x.shape[-1]  # the channels, or more when the cpp path pads them
        x = dict(zip(used, x.index_select(0, sender).split([self.irreps_in[j].ir.dim for j in used], dim=1)))

        # Into the edge frame: per input segment, [E, 2k+1, C] split into m = 0, ±1, ±2, ..
        rotated = {}
        for j, rotation in enumerate(self._frame_rotations(wigner, self.irreps_in, self._rows_in)):
            if rotation is not None:
                rotated[j] = (rotation @ x[j]).split([1] + [2] * self._k_in[j], dim=1)

        # The SO(2) map, one block (m, class) at a time: [E, out, in, 1, C] * [E, 1, in, ±, C]
        # summed over the inputs (broadcast products beat batches of tiny matrix products here).
        results = []
        weights = edge_weights.split([n_out * n_in * channels for n_out, n_in, _ in self._block_sizes], dim=1)
        for (m, _, inputs), (n_out, n_in, pair), w in zip(self.blocks, self._block_sizes, weights):
            x_block = torch.cat([rotated[j][m] for j in inputs], dim=1).view(num_edges, 1, n_in, pair, channels)
            y = (w.view(num_edges, n_out, n_in, 1, channels) * x_block).sum(2)  # [E, out, ±, C]
            results.append(y.view(num_edges, n_out * pair, channels).split(pair, dim=1))

        # Back to the global frame.
        messages = []
        zero = edge_weights.new_zeros(num_edges, 1, channels)
        rotations = self._frame_rotations(wigner, self.irreps_out, self._rows_out)
        for rotation, sources in zip(rotations, self._output_sources):
            y = torch.cat([zero if source is None else results[source[0]][source[1]] for source in sources], dim=1)
            messages.append(rotation.transpose(1, 2) @ y)  # [E, 2l+1, C]
        return torch.cat(messages, dim=1).flatten(1)

    def _kernel_tables(self) -> list[torch.Tensor]:
        """The tables of ``so2_cpp.cpp``: ``rows_in, factors_in, terms, rows_out, factors_out``.

        Rows are ``(first component, 2l+1, first Wigner entry)``: components of the channels-last
        features (used input segments) or output, entries of :func:`_wigner_entries`; terms are
        ``(row of ỹ, row of x̃, weight column)``. Output rows that no block writes get factor 0.
        """
        starts = _wigner_entry_starts(self.l_max, self.m_max)

        def rows(irreps, segments, frame_rows, first_of):
            table, factors, row_of = [], [], {}
            for j in segments:
                l = irreps[j].ir.l
                for t, (offset, factor) in enumerate(zip(*frame_rows[j])):
                    row_of[j, t] = len(table)
                    table.append((first_of[j], 2 * l + 1, _wigner_entry(starts, self.m_max, l, offset)))
                    factors.append(factor)
            return table, factors, row_of

        first_in = dict(zip(self._used, itertools.accumulate([self.irreps_in[j].ir.dim for j in self._used], initial=0)))
        first_out = dict(enumerate(itertools.accumulate([ir.dim for _, ir in self.irreps_out], initial=0)))
        rows_in, factors_in, row_in = rows(self.irreps_in, self._used, self._rows_in, first_in)
        rows_out, factors_out, row_out = rows(self.irreps_out, range(len(self.irreps_out)), self._rows_out, first_out)
        terms, column = [], 0
        for m, outputs, inputs in self.blocks:
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

    def _wigner_from_entries(self, entries: torch.Tensor) -> list[torch.Tensor]:
        """The inverse of :func:`_wigner_entries`: ``[E, 2k+1, 2l+1]`` for l = 0 .. l_max."""
        shapes = [(2 * min(l, self.m_max) + 1, 2 * l + 1) for l in range(self.l_max + 1)]
        pieces = entries.split([rows * columns for rows, columns in shapes], dim=1)
        return [piece.view(-1, *shape) for piece, shape in zip(pieces, shapes)]

    def _check_cpp(self, node_feats, edge_weights, wigner) -> None:
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

    def _check(self, node_feats, edge_vec, edge_weights, edge_index, wigner) -> None:
        if node_feats.shape[-1] != self.irreps_in.dim:
            raise ValueError(
                f"node_feats has {node_feats.shape[-1]} features but irreps_in '{self.irreps_in}' has dim {self.irreps_in.dim}"
            )
        if edge_vec.dim() != 2 or edge_vec.shape[1] != 3:
            raise ValueError(f"edge_vec must have shape [E, 3], got {list(edge_vec.shape)}")
        num_edges = edge_vec.shape[0]
        if edge_weights.shape != (num_edges, self.weight_numel):
            raise ValueError(
                f"edge_weights must have shape [{num_edges}, {self.weight_numel}] (one row per edge, "
                f"weight_numel columns), got {list(edge_weights.shape)}"
            )
        if edge_index.dim() != 2 or edge_index.shape != (2, num_edges):
            raise ValueError(f"edge_index must have shape [2, {num_edges}] (senders, receivers), got {list(edge_index.shape)}")
        if wigner is not None:
            if len(wigner) <= self.l_max or any(
                d.shape[0] != num_edges or d.shape[1] < 2 * min(l, self.m_max) + 1 for l, d in enumerate(wigner[: self.l_max + 1])
            ):
                raise ValueError(
                    f"wigner must be edge_wigner_D(l_max >= {self.l_max}, edge_vec, m_max >= {self.m_max}) for the "
                    f"{num_edges} edges, got shapes {[list(d.shape) for d in wigner]}"
                )

    def extra_repr(self) -> str:
        return (
            f"'{self.irreps_in}' -> '{self.irreps_out}', m_max={self.m_max}, weight_numel={self.weight_numel}, "
            f"backend={self.backend!r}"
        )


class _SO2Kernel(torch.autograd.Function):
    """``backend="cpp"``: the fused C++ kernel (``so2_cpp.cpp``) of ``conv``, from channels-last
    features ``x [N_in, components, C]``, Wigner entries ``[E, W]`` (:func:`_wigner_entries`)
    and edge weights to ``[N, sum of 2l+1 over irreps_out, C]``.

    The backward pass is one sweep of the kernel over the edges in sender order. A backward
    pass that builds a graph (force training differentiates twice) differentiates the torch
    path on the same inputs instead, so every order of derivative exists.
    """

    @staticmethod
    def forward(ctx, conv, x, entries, edge_weights, edge_index, num_nodes):
        from .kernels import cpp_so2

        sender, receiver = edge_index
        out = x.new_zeros(num_nodes, conv.irreps_out.dim // conv.channels, x.shape[-1])
        cpp_so2().so2_forward(x, entries, edge_weights, sender, receiver, torch.argsort(receiver), *conv._cpp_tables, out)
        ctx.conv = conv
        ctx.save_for_backward(x, entries, edge_weights, edge_index)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        from .kernels import cpp_so2

        conv, (x, entries, edge_weights, edge_index) = ctx.conv, ctx.saved_tensors
        wanted = ctx.needs_input_grad[1:4]
        if torch.is_grad_enabled():
            inputs = [t for t, want in zip((x, entries, edge_weights), wanted) if want]
            with torch.enable_grad():
                wigner = conv._wigner_from_entries(entries)
                out = conv._summed_messages(x, edge_index, edge_weights, wigner, grad_out.shape[0])
            grads = iter(torch.autograd.grad(out, inputs, grad_out.reshape(out.shape), create_graph=True))
            return None, *(next(grads) if want else None for want in wanted), None, None
        grad_x = torch.zeros_like(x) if wanted[0] else x.new_empty(0)
        grad_entries = torch.empty(entries.shape, dtype=x.dtype) if wanted[1] else x.new_empty(0)  # written whole
        grad_weights = torch.empty(edge_weights.shape, dtype=x.dtype) if wanted[2] else x.new_empty(0)
        sender, receiver = edge_index
        cpp_so2().so2_backward(
            x, entries, edge_weights, sender, receiver, torch.argsort(sender), *conv._cpp_tables, grad_out.contiguous(),
            grad_x, grad_entries, grad_weights,
        )
        return None, *(g if want else None for g, want in zip((grad_x, grad_entries, grad_weights), wanted)), None, None


def _wigner_entries(wigner: list[torch.Tensor], l_max: int, m_max: int) -> torch.Tensor:
    """``[E, W]``: the rows ``|m| <= min(l, m_max)`` of ``D^l`` (from ``edge_wigner_D`` with at
    least those degrees and rows), flattened and concatenated for l = 0 .. l_max; the fused
    kernels read the rotations from it."""
    pieces = []
    for l, d in enumerate(wigner[: l_max + 1]):
        k = min(l, m_max)
        pieces.append(d.narrow(1, (d.shape[1] - 1) // 2 - k, 2 * k + 1).flatten(1))
    return torch.cat(pieces, dim=1)


def _wigner_entry_starts(l_max: int, m_max: int) -> list[int]:
    """Where the rows of ``D^l`` start in :func:`_wigner_entries`, l = 0 .. l_max, then ``W``."""
    starts = [0]
    for l in range(l_max + 1):
        starts.append(starts[-1] + (2 * min(l, m_max) + 1) * (2 * l + 1))
    return starts


def _wigner_entry(starts: list[int], m_max: int, l: int, offset: int) -> int:
    """The entry of ``D^l[m = offset, 0]`` (its row follows), ``starts`` from :func:`_wigner_entry_starts`."""
    return starts[l] + (min(l, m_max) + offset) * (2 * l + 1)


def _frame_rows(ir: o3.Irrep, k: int, factor_of_m) -> tuple[list[int], list[float]] | None:
    """Rows (offsets ``m`` from the middle of D^l) and factors of a segment's frame rotation,
    in the order m = 0, +1, -1, .., +k, -k; ``None`` for a segment no block uses.

    For class -1 irreps the quarter turn J takes row ``+m`` from ``-m`` and row ``-m`` from
    ``-(+m)``.
    """
    if k < 0:
        return None
    offsets, factors = [0], [factor_of_m(0)]
    for m in range(1, k + 1):
        if _class(ir) == 1:
            offsets += [m, -m]
            factors += [factor_of_m(m), factor_of_m(m)]
        else:
            offsets += [-m, m]
            factors += [factor_of_m(m), -factor_of_m(m)]
    return offsets, factors


def _channels_last(x: torch.Tensor, irreps: o3.Irreps, used: list[int]) -> torch.Tensor:
    """e3nn layout ``[N, irreps.dim]`` → ``[N, sum of 2l+1 over the segments used, C]``."""
    pieces = x.split([mul * ir.dim for mul, ir in irreps], dim=1)
    return torch.cat([pieces[j].view(-1, irreps[j].mul, irreps[j].ir.dim).transpose(1, 2) for j in used], dim=1)


def _channels_first(x: torch.Tensor, irreps: o3.Irreps) -> torch.Tensor:
    """``[N, sum of 2l+1, C]`` flattened to ``[N, -1]`` → e3nn layout ``[N, irreps.dim]``."""
    pieces = x.reshape(x.shape[0], -1, irreps[0].mul).split([ir.dim for _, ir in irreps], dim=1)
    return torch.cat([p.transpose(1, 2).reshape(x.shape[0], -1) for p in pieces], dim=1)


def _quarter_turn(ir: o3.Irrep) -> torch.Tensor:
    """The ``J`` of the module docstring on all ``2l+1`` components (identity for class +1)."""
    l = ir.l
    if _class(ir) == 1:
        return torch.eye(2 * l + 1, dtype=torch.float64)
    j = torch.zeros(2 * l + 1, 2 * l + 1, dtype=torch.float64)
    j[l, l] = 1.0
    for m in range(1, l + 1):
        j[l + m, l - m] = 1.0
        j[l - m, l + m] = -1.0
    return j


def _cg_to_so2_matrix(cg: CGConvolution, so2: SO2Convolution) -> torch.Tensor:
    """``[cg.weight_numel, so2.weight_numel]``: the linear map of :func:`so2_weights_from_cg`, float64."""
    if cg.irreps_node != so2.irreps_in:
        raise ValueError(f"the CG convolution's irreps_node '{cg.irreps_node}' must equal irreps_in '{so2.irreps_in}'")
    if any(ir.p != (-1) ** ir.l for _, ir in cg.irreps_edge):
        raise ValueError(f"irreps_edge must be spherical harmonics (0e, 1o, 2e, ...), got '{cg.irreps_edge}'")
    outs = [ir for _, ir in so2.irreps_out]
    cg_outs = [ir for _, ir in cg.irreps_out]
    if outs == cg_outs:
        target = list(range(len(cg_outs)))  # one output segment per CG path
    elif all(outs.count(ir) == 1 for ir in cg_outs):
        target = [outs.index(ir) for ir in cg_outs]  # the CG paths to one irrep are summed
    else:
        raise ValueError(
            f"irreps_out '{so2.irreps_out}' must equal the CG convolution's '{cg.irreps_out}' or hold each of its "
            f"irreps once (paths to the same irrep are then summed)"
        )
    channels = so2.channels
    column_of = {}  # (m, output segment, input segment) -> (column for channel 0, 1/sqrt(n) of the block)
    offset = 0
    for m, o, i in so2.blocks:
        for row, j_out in enumerate(o):
            for column, j_in in enumerate(i):
                column_of[(m, j_out, j_in)] = (offset + row * len(i) + column, 1.0 / math.sqrt(len(i)))
        offset += len(o) * len(i)

    matrix = torch.zeros(cg.weight_numel, so2.weight_numel, dtype=torch.float64)
    cg_offset = 0
    for path, (i1, i2, i_out) in enumerate(cg.instructions):
        ir_in, ir_edge, ir_out = cg.irreps_node[i1].ir, cg.irreps_edge[i2].ir, cg.irreps_out[i_out].ir
        # The path in the edge frame: Y^{l_f}(ŷ) = sqrt(2 l_f + 1) e_0, CG normalized by sqrt(2 l_out + 1).
        c = o3.wigner_3j(ir_in.l, ir_edge.l, ir_out.l, dtype=torch.float64)[:, ir_edge.l, :]  # [m_in, m_out]
        edge_frame = math.sqrt((2 * ir_edge.l + 1) * (2 * ir_out.l + 1)) * c.T  # out = edge_frame @ in
        edge_frame = _quarter_turn(ir_out) @ edge_frame @ _quarter_turn(ir_in).T
        for m in range(min(ir_in.l, ir_out.l) + 1):
            value = edge_frame[ir_out.l + m, ir_in.l + m].item()
            if abs(value) < 1e-12:
                continue
            key = (m, target[i_out], i1)
            if key not in column_of:
                raise ValueError(
                    f"the CG path {ir_in} x {ir_edge} -> {ir_out} needs m = {m} but the SO(2) convolution keeps "
                    f"m <= {so2.m_max}; build it with m_max=None for an exact equivalent"
                )
            column, scale = column_of[key]
            u = torch.arange(channels)
            matrix[cg_offset + u, column * channels + u] += value / scale
        cg_offset += cg.irreps_node[i1].mul
    return matrix


def so2_weights_from_cg(cg_weights: torch.Tensor, cg: CGConvolution, so2: SO2Convolution) -> torch.Tensor:
    """Per-edge weights of ``so2`` that make it compute what ``cg`` computes.

    ``so2(x, edge_vec, so2_weights_from_cg(w, cg, so2), edge_index)`` equals
    ``cg(x, spherical_harmonics(l, edge_vec), w, edge_index)`` (normalized, component
    normalization), with the paths that ``cg`` keeps apart summed when ``so2.irreps_out``
    holds each output irrep once. Each CG path ``(l_in, l_f, l_out)`` contributes, for every
    ``m <= min(l_in, l_out)``, ``w · sqrt((2 l_f + 1)(2 l_out + 1)) · C(l_in, l_f, l_out)[m, 0, m]``
    (after the quarter turns of class ``-1`` irreps) to the SO(2) weight of ``(m, l_out, l_in)``.

    Args:
        cg_weights: ``[E, cg.weight_numel]``.
        cg: the CG convolution (spherical-harmonic edge attributes).
        so2: an SO(2) convolution with ``so2.irreps_in == cg.irreps_node`` and ``m_max``
            large enough for every path (``None`` always is).

    Returns:
        ``[E, so2.weight_numel]``.
    """
    if cg_weights.shape[-1] != cg.weight_numel:
        raise ValueError(f"cg_weights must have {cg.weight_numel} columns (cg.weight_numel), got {cg_weights.shape[-1]}")
    return cg_weights @ _cg_to_so2_matrix(cg, so2).to(cg_weights)
