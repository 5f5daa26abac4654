"""Edges and their reverses, so that functions of the edge length are computed once per pair.

A neighbour list holds every bond twice: ``j -> i`` with vector ``v`` and ``i -> j``
with ``-v`` (an atom and its own periodic image, ``i -> i``, with ``v`` and ``-v``).
Both have the same length, as functions of the positions and the cell, not only in
value, so a radial network evaluated on one of them gives the other's values and all
their derivatives: the energy, forces, stress and their derivatives are unchanged when
it runs on one edge per pair (half the work of the radial MLPs that dominate TensorNet).

The pairs are found exactly, by sorting: two edges are paired only when their atoms
are swapped and their vectors are bitwise negatives of each other, which is how the
models compute them (``pos[i] - pos[j] + shift @ cell``, negated term by term). An
edge without its reverse (a truncated or one-sided list) stays on its own.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["EdgePairs", "one_per_pair", "per_edge", "reverse_edge_pairs"]


class EdgePairs(NamedTuple):
    """``first [P]``: one edge of each pair (or lone edge); ``inverse [E]``: each edge's pair in ``0..P-1``."""

    first: torch.Tensor
    inverse: torch.Tensor


def _lexicographically_negative(v: torch.Tensor) -> torch.Tensor:
    x, y, z = v.unbind(-1)
    return (x < 0) | ((x == 0) & ((y < 0) | ((y == 0) & (z < 0))))


def reverse_edge_pairs(edge_index: torch.Tensor, edge_vec: torch.Tensor) -> EdgePairs | None:
    """Each edge's pair with its reverse, or ``None`` when no edge has one (or the sizes
    are symbolic, under tracing or compilation, where the models use every edge).

    Shapes: ``edge_index: [2, E]`` (senders, receivers), ``edge_vec: [E, 3]`` (Å). Use as
    ``f(r[pairs.first])[pairs.inverse]`` for a function ``f`` of the edge length ``r``.
    """
    num_edges = edge_vec.shape[0]
    if torch.compiler.is_compiling() or not isinstance(num_edges, int) or num_edges < 2:
        return None
    with torch.no_grad():
        sender, receiver = edge_index
        vec = edge_vec.detach()
        # Write each edge with its smaller atom index first (for i -> i, its vector
        # pointing to positive x, y, z first): an edge and its reverse then coincide.
        flip = (sender > receiver) | ((sender == receiver) & _lexicographically_negative(vec))
        low, high = torch.where(flip, receiver, sender), torch.where(flip, sender, receiver)
        vec = torch.where(flip.unsqueeze(-1), -vec, vec) + 0.0  # + 0.0 turns -0.0 into 0.0
        atoms = low * (int(high.max()) + 1) + high
        order = torch.arange(num_edges, device=vec.device)
        for key in (vec[:, 2], vec[:, 1], vec[:, 0], atoms):  # lexicographic: atoms, then x, y, z
            order = order[torch.sort(key[order], stable=True).indices]
        atoms, vec = atoms[order], vec[order]
        same = (atoms[1:] == atoms[:-1]) & (vec[1:] == vec[:-1]).all(-1)
        if not same.any():
            return None
        starts = torch.cat((same.new_ones(1), ~same))
        inverse = torch.empty_like(order)
        inverse[order] = starts.cumsum(0) - 1
        return EdgePairs(first=order[starts], inverse=inverse)


def one_per_pair(values: torch.Tensor, pairs: EdgePairs | None) -> torch.Tensor:
    """``[E, ...]`` → ``[P, ...]``: the values of one edge of each pair (all edges if ``pairs`` is None)."""
    return values if pairs is None else values.index_select(0, pairs.first)


def per_edge(values: torch.Tensor, pairs: EdgePairs | None) -> torch.Tensor:
    """``[P, ...]`` → ``[E, ...]``: each edge gets its pair's values (the inverse of :func:`one_per_pair`)."""
    return values if pairs is None else values.index_select(0, pairs.inverse)
