"""The structure of an SO(2) convolution (:class:`~equinet.ops.SO2Convolution`): which irreps
couple at which ``m``, the rows of the Wigner matrices that take each segment into the edge
frame, and where the fused kernels find those rows. A plain description, shared by the
reference and its backends (:mod:`equinet.ops.kernels`)."""

from __future__ import annotations

import math

import torch
from e3nn import o3

__all__ = ["SO2Blocks", "frame_rows", "irrep_class", "wigner_entries", "wigner_entry", "wigner_entry_starts"]


def irrep_class(ir: o3.Irrep) -> int:
    """``+1`` for irreps with the parity of Y^l (``0e, 1o, 2e, ..``), ``-1`` for the others."""
    return ir.p * (-1) ** ir.l


def frame_rows(ir: o3.Irrep, k: int, factor_of_m) -> tuple[list[int], list[float]] | None:
    """Rows (offsets ``m`` from the middle of D^l) and factors of a segment's frame rotation,
    in the order m = 0, +1, -1, .., +k, -k; ``None`` for a segment no block uses.

    For class -1 irreps the quarter turn J takes row ``+m`` from ``-m`` and row ``-m`` from
    ``-(+m)``.
    """
    if k < 0:
        return None
    offsets, factors = [0], [factor_of_m(0)]
    for m in range(1, k + 1):
        if irrep_class(ir) == 1:
            offsets += [m, -m]
            factors += [factor_of_m(m), factor_of_m(m)]
        else:
            offsets += [-m, m]
            factors += [factor_of_m(m), -factor_of_m(m)]
    return offsets, factors


def wigner_entries(wigner: list[torch.Tensor], l_max: int, m_max: int) -> torch.Tensor:
    """``[E, W]``: the rows ``|m| <= min(l, m_max)`` of ``D^l`` (from ``edge_wigner_D`` with at
    least those degrees and rows), flattened and concatenated for l = 0 .. l_max; the fused
    kernels read the rotations from it."""
    pieces = []
    for l, d in enumerate(wigner[: l_max + 1]):
        k = min(l, m_max)
        pieces.append(d.narrow(1, (d.shape[1] - 1) // 2 - k, 2 * k + 1).flatten(1))
    return torch.cat(pieces, dim=1)


def wigner_entry_starts(l_max: int, m_max: int) -> list[int]:
    """Where the rows of ``D^l`` start in :func:`wigner_entries`, l = 0 .. l_max, then ``W``."""
    starts = [0]
    for l in range(l_max + 1):
        starts.append(starts[-1] + (2 * min(l, m_max) + 1) * (2 * l + 1))
    return starts


def wigner_entry(starts: list[int], m_max: int, l: int, offset: int) -> int:
    """The entry of ``D^l[m = offset, 0]`` (its row follows), ``starts`` from :func:`wigner_entry_starts`."""
    return starts[l] + (min(l, m_max) + offset) * (2 * l + 1)


class SO2Blocks:
    """The blocks of an SO(2) convolution from ``irreps_in`` to ``irreps_out`` (one multiplicity,
    the channels) keeping ``|m| <= m_max`` (``None``: all).

    Attributes:
        blocks: ``(m, outputs, inputs)``: ``m = 0`` with the outputs and inputs of class ``+1``,
            then of class ``-1``; then ``m = 1 .. m_max`` with those of degree ``>= m``
            (segment indices in the order of ``irreps_out`` / ``irreps_in``).
        weight_numel: per-edge weights, laid out ``[block, output irrep, input irrep, channel]``.
        k_in, k_out: per segment, the largest ``m`` of a block that uses it (-1: none).
        used: the input segments that some block uses.
        rows_in, rows_out: per segment, :func:`frame_rows` (on the way in with the block's
            ``1/sqrt(n)``).

    Raises:
        ValueError: unequal multiplicities, a bad ``m_max`` or an output that no input reaches.
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps, m_max: int | None):
        self.irreps_in, self.irreps_out = irreps_in, irreps_out
        multiplicities = {mul for mul, _ in irreps_in} | {mul for mul, _ in irreps_out}
        if len(multiplicities) != 1:
            raise ValueError(
                f"every segment of irreps_in and irreps_out must have the same multiplicity (the channels, kept "
                f"by the convolution), got irreps_in '{irreps_in}' and irreps_out '{irreps_out}'"
            )
        self.channels = multiplicities.pop()
        self.l_max = max(ir.l for _, ir in irreps_in + irreps_out)
        if m_max is None:
            m_max = self.l_max
        if not isinstance(m_max, int) or m_max < 0:
            raise ValueError(f"m_max must be a non-negative integer or None, got {m_max!r}")
        self.m_max = min(m_max, self.l_max)

        ins = [ir for _, ir in irreps_in]
        outs = [ir for _, ir in irreps_out]
        self.blocks: list[tuple[int, list[int], list[int]]] = []
        for sign in (1, -1):
            o = [j for j, ir in enumerate(outs) if irrep_class(ir) == sign]
            i = [j for j, ir in enumerate(ins) if irrep_class(ir) == sign]
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
                f"output irreps {', '.join(missing)} of '{irreps_out}' receive nothing from irreps_in "
                f"'{irreps_in}' with m_max={self.m_max} (at m = 0 an irrep couples only to irreps of its class, "
                f"0e 1o 2e .. or 0o 1e 2o ..; at m >= 1 to any of degree >= m); remove them, add inputs or raise m_max"
            )
        self.weight_numel = self.channels * sum(len(o) * len(i) for _, o, i in self.blocks)

        self.k_in = [max((m for m, _, i in self.blocks if j in i), default=-1) for j in range(len(ins))]
        self.k_out = [max((m for m, o, _ in self.blocks if j in o), default=-1) for j in range(len(outs))]
        self.used = [j for j, k in enumerate(self.k_in) if k >= 0]
        scales = {(m, j): 1.0 / math.sqrt(len(i)) for m, _, i in self.blocks for j in i}
        # In the edge frame a segment's rows are m = 0, +1, -1, +2, -2, .. (each m contiguous),
        # made by rows (offsets from the middle) of D^l times factors: the quarter turn J for
        # class -1 and, on the way in, the 1/sqrt(n) of the block.
        self.rows_in = [frame_rows(ir, k, lambda m, j=j: scales.get((m, j), 0.0)) for j, (ir, k) in enumerate(zip(ins, self.k_in))]
        self.rows_out = [frame_rows(ir, k, lambda m: 1.0) for ir, k in zip(outs, self.k_out)]

    def channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """e3nn layout ``[N, irreps_in.dim]`` → ``[N, sum of 2l+1 over the used segments, C]``."""
        irreps = self.irreps_in
        pieces = x.split([mul * ir.dim for mul, ir in irreps], dim=1)
        return torch.cat([pieces[j].view(-1, irreps[j].mul, irreps[j].ir.dim).transpose(1, 2) for j in self.used], dim=1)

    def channels_first(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, sum of 2l+1 over irreps_out, C]`` flattened to ``[N, -1]`` → e3nn layout ``[N, irreps_out.dim]``."""
        irreps = self.irreps_out
        pieces = x.reshape(x.shape[0], -1, irreps[0].mul).split([ir.dim for _, ir in irreps], dim=1)
        return torch.cat([p.transpose(1, 2).reshape(x.shape[0], -1) for p in pieces], dim=1)
