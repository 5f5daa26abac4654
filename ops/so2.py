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

import math

import torch
from e3nn import o3

from .cg import CGConvolution
from .irreps import as_irreps
from .kernels import build, constants_only
from .so2_blocks import SO2Blocks, irrep_class
from .wigner import edge_wigner_D

__all__ = ["SO2Convolution", "so2_weights_from_cg"]


def _node_irreps(irreps, name: str) -> o3.Irreps:
    """e3nn irreps, or ``(l_max, channels)`` for ``channels x (0e + 1o + 2e + ... up to l_max)``."""
    if isinstance(irreps, tuple) and len(irreps) == 2 and all(isinstance(n, int) and not isinstance(n, bool) for n in irreps):
        l_max, channels = irreps
        if l_max < 0 or channels < 1:
            raise ValueError(f"{name} as (l_max, channels) needs l_max >= 0 and channels >= 1, got {irreps!r}")
        return o3.Irreps([(channels, (l, (-1) ** l)) for l in range(l_max + 1)])
    return as_irreps(irreps, name)


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
            kernels, :mod:`equinet.ops.kernels.triton.so2`) or ``"cpp"`` (one fused CPU kernel,
            compiled on first use, :mod:`equinet.ops.kernels.cpp.so2`); same weights, same
            result.

    Attributes:
        weight_numel: per-edge weights per row, laid out ``[block, output irrep, input
            irrep, channel]``. The blocks: ``m = 0`` with the outputs and inputs of
            class ``+1``, then of class ``-1``; then ``m = 1 .. m_max`` with the outputs and
            inputs of degree ``>= m`` (irreps in the order of ``irreps_out`` /
            ``irreps_in``); ``blocks`` lists them as ``(m, outputs, inputs)``.

    Shapes: ``node_feats: [N, irreps_in.dim]``, ``edge_vec: [E, 3]`` (sender → receiver),
    ``edge_weights: [E, weight_numel]``, ``edge_index: [2, E]`` (row 0 senders, row 1
    receivers) → ``[N, irreps_out.dim]``, or ``[num_receivers, irreps_out.dim]``.

    Example:
        >>> conv = SO2Convolution((6, 32), m_max=2)   # 32x0e+32x1o+...+32x6e in and out, eSCN's truncation
        >>> conv = SO2Convolution("8x0e+8x1o+8x2e", "8x0e+8x1o+8x2e", m_max=1)
        >>> out = conv(x, edge_vec, radial(edge_length), edge_index)   # radial: [E] → [E, conv.weight_numel]
    """

    family = "so2"  # in the backend registry, equinet.ops.kernels

    def __init__(self, irreps_in, irreps_out=None, m_max: int | None = None, backend: str = "torch"):
        super().__init__()
        self.irreps_in = _node_irreps(irreps_in, "irreps_in")
        self.irreps_out = self.irreps_in if irreps_out is None else _node_irreps(irreps_out, "irreps_out")
        self.structure = SO2Blocks(self.irreps_in, self.irreps_out, m_max)
        self.channels, self.l_max, self.m_max = self.structure.channels, self.structure.l_max, self.structure.m_max
        self.blocks, self.weight_numel = self.structure.blocks, self.structure.weight_numel
        self._block_sizes = [(len(o), len(i), 1 if m == 0 else 2) for m, o, i in self.blocks]
        # Output segment j, component m comes from block b, row of its result (None: zero,
        # m = 0 of an output whose class has no input).
        source = {(j, m): (b, row) for b, (m, o, _) in enumerate(self.blocks) for row, j in enumerate(o)}
        self._output_sources = [[source.get((j, m)) for m in range(k + 1)] for j, k in enumerate(self.structure.k_out)]
        # Edges per chunk: the largest product of the map, [out, in, ±, C] per edge, in ~1M numbers.
        self._edge_chunk = max(64, 2**20 // (self.channels * max(o * i * pair for o, i, pair in self._block_sizes)))
        self.set_backend(backend)

    def set_backend(self, backend: str) -> None:
        """Compute with ``backend`` (see the class docstring) from now on: same weights, same
        result; the backend holds only constants of the irreps, which state dicts do not carry."""
        kernels = build(self.family, backend, self.structure)
        self.kernels = None if kernels is None else constants_only(kernels)
        self.backend = backend

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
        num_receivers: int | None = None,
    ) -> torch.Tensor:
        """Convolve; ``wigner`` may pass ``edge_wigner_D(conv.l_max, edge_vec, conv.m_max)``
        when several convolutions share the edges (it is computed here otherwise);
        ``num_receivers``: rows of the output, which the receivers index (``None``: they are
        the nodes, ``node_feats.shape[0]``)."""
        self._check(node_feats, edge_vec, edge_weights, edge_index, wigner)
        if wigner is None:
            wigner = edge_wigner_D(self.l_max, edge_vec, self.m_max)
        rows = node_feats.shape[0] if num_receivers is None else num_receivers
        if self.kernels is not None:
            return self.kernels(node_feats, wigner, edge_weights, edge_index, rows, self._summed_messages)
        x = self.structure.channels_last(node_feats)
        out = self._summed_messages(x, edge_index, edge_weights, wigner[: self.l_max + 1], rows)
        return self.structure.channels_first(out)

    def _summed_messages(self, x, edge_index, edge_weights, wigner, num_receivers) -> torch.Tensor:
        """The torch path: ``[N, sum of 2l+1 over irreps_out, C]`` flattened, from channels-last ``x``."""
        out = x.new_zeros(num_receivers, self.irreps_out.dim // self.channels * x.shape[-1])
        # On the CPU the edges go in chunks small enough for their intermediates to stay in
        # cache (BENCHMARKS.md); split, not sliced, so that backward stays one pass.
        # On the GPU, and when traced with symbolic sizes for export, all edges go at once.
        if x.is_cuda or isinstance(edge_index.shape[1], torch.SymInt):
            chunks = [(edge_index, edge_weights, *wigner)]
        else:
            chunk = self._edge_chunk
            chunks = zip(edge_index.split(chunk, dim=1), edge_weights.split(chunk), *(d.split(chunk) for d in wigner))
        for (sender, receiver), weights, *wigner_chunk in chunks:
            out.index_add_(0, receiver, self._messages(x, sender, weights, wigner_chunk))
        return out

    def _messages(self, x, sender, edge_weights, wigner) -> torch.Tensor:
        """Messages of a chunk of edges, channels-last ``[E, sum of 2l+1 over irreps_out, C]`` flattened."""
        num_edges, channels = sender.shape[0], x.shape[-1]  # the channels, or more when the cpp path pads them
        used = self.structure.used
        x = dict(zip(used, x.index_select(0, sender).split([self.irreps_in[j].ir.dim for j in used], dim=1)))

        # Into the edge frame: per input segment, [E, 2k+1, C] split into m = 0, ±1, ±2, ..
        rotated = {}
        for j, rotation in enumerate(self._frame_rotations(wigner, self.irreps_in, self.structure.rows_in)):
            if rotation is not None:
                rotated[j] = (rotation @ x[j]).split([1] + [2] * self.structure.k_in[j], dim=1)

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
        rotations = self._frame_rotations(wigner, self.irreps_out, self.structure.rows_out)
        for rotation, sources in zip(rotations, self._output_sources):
            y = torch.cat([zero if source is None else results[source[0]][source[1]] for source in sources], dim=1)
            messages.append(rotation.transpose(1, 2) @ y)  # [E, 2l+1, C]
        return torch.cat(messages, dim=1).flatten(1)

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


def _quarter_turn(ir: o3.Irrep) -> torch.Tensor:
    """The ``J`` of the module docstring on all ``2l+1`` components (identity for class +1)."""
    l = ir.l
    if irrep_class(ir) == 1:
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
