"""The reference transforms of the Gaunt products: spherical-harmonic coefficients to values
on the sphere grid (as mirror-even and mirror-odd halves) or on the 2D torus, pointwise
products (and the Poisson bracket), and back to coefficients."""

from __future__ import annotations

import torch

from .matrices import bracket_matrices, bracket_synthesis, cached_matrices, fourier_analysis, fourier_synthesis
from .matrices import grid_analysis, grid_synthesis, lowered

__all__ = ["Halves", "analysis", "combine", "factor", "from_grid", "to_grid"]


# A function on the grid is kept as its mirror-even and mirror-odd parts on the northern
# half, ``even = (h_N + h_S) / 2`` and ``odd = (h_N - h_S) / 2`` (``None`` for zero): the
# components with ``l + m`` even make the first, the others the second, and a product needs
# no southern values (``(e1 + o1)(e2 + o2)`` and ``(e1 - o1)(e2 - o2)`` have even part
# ``e1 e2 + o1 o2`` and odd part ``e1 o2 + o1 e2``).
Halves = tuple[torch.Tensor, "torch.Tensor | None"]


def to_grid(x: torch.Tensor, degrees: tuple[int, ...], band_limit: int) -> Halves:
    """``x [..., D]`` (module order) → its (even, odd) parts ``[..., P/2]`` on the grid."""
    y_even, y_odd = cached_matrices(grid_synthesis, degrees, band_limit, dtype=x.dtype, device=x.device)
    n_even = y_even.shape[0]
    return x[..., :n_even] @ y_even, x[..., n_even:] @ y_odd if y_odd.shape[0] else None


def _multiply(a: Halves, b: Halves) -> Halves:
    """The pointwise product of two functions on the grid, as (even, odd) parts."""
    (even_a, odd_a), (even_b, odd_b) = a, b
    even, odd = even_a * even_b, None
    if odd_a is not None and odd_b is not None:
        even = torch.addcmul(even, odd_a, odd_b)
    if odd_b is not None:
        odd = even_a * odd_b
    if odd_a is not None:
        odd = odd_a * even_b if odd is None else torch.addcmul(odd, odd_a, even_b)
    return even, odd


def from_grid(h: Halves, degrees: tuple[int, ...], band_limit: int) -> torch.Tensor:
    """(even, odd) parts ``[..., P/2]`` → ``(1/4pi) int h Y [..., D]`` (module order), by quadrature."""
    even, odd = h
    p_even, p_odd = cached_matrices(grid_analysis, degrees, band_limit, dtype=even.dtype, device=even.device)
    out = even @ p_even
    if p_odd.shape[1] == 0:
        return out
    out_odd = out.new_zeros(*out.shape[:-1], p_odd.shape[1]) if odd is None else odd @ p_odd
    return torch.cat([out, out_odd], dim=-1)


def _to_torus(x: torch.Tensor, degrees: tuple[int, ...], size: tuple[int, int]) -> torch.Tensor:
    """``x [..., D]`` (module order) → values ``[..., n_u, n_v]`` on the uniform torus grid, from
    its 2D Fourier coefficients by an inverse real FFT."""
    (synthesis,) = cached_matrices(fourier_synthesis, degrees, dtype=x.dtype, device=x.device)
    l_max, (n_u, n_v) = max(degrees), size
    spectrum = torch.view_as_complex((x @ synthesis).unflatten(-1, (2 * l_max + 1, l_max + 1, 2)))
    gap = spectrum.new_zeros(*spectrum.shape[:-2], n_u - 2 * l_max - 1, l_max + 1)
    spectrum = torch.cat([spectrum[..., : l_max + 1, :], gap, spectrum[..., l_max + 1 :, :]], dim=-2)
    return torch.fft.irfft2(spectrum, s=(n_u, n_v), norm="forward")  # v is zero-padded to n_v // 2 + 1


def _from_torus(values: torch.Tensor, degrees: tuple[int, ...]) -> torch.Tensor:
    """Values ``[..., n_u, n_v]`` → ``(1/4pi) int h Y`` ``[..., D]`` (module order): the Fourier
    coefficients by a real FFT, then the exact Fourier → spherical-harmonic map."""
    (analysis,) = cached_matrices(fourier_analysis, degrees, values.shape[-2], dtype=values.dtype, device=values.device)
    spectrum = torch.fft.rfft2(values, norm="forward")[..., : max(degrees) + 1]
    return torch.view_as_real(spectrum).flatten(-3) @ analysis


def _synthesis(x: torch.Tensor, degrees, method: str, size):
    """``x [..., D]`` (module order) → its values: (even, odd) halves on the grid, or the torus."""
    return to_grid(x, degrees, size) if method == "grid" else _to_torus(x, degrees, size)


def _pointwise(f, g, method: str):
    """The product of two functions' values."""
    return _multiply(f, g) if method == "grid" else f * g


def analysis(values, degrees, method: str, size) -> torch.Tensor:
    """Values → ``(1/4pi) int h Y`` ``[..., D]`` (module order)."""
    return from_grid(values, degrees, size) if method == "grid" else _from_torus(values, degrees)


def factor(x: torch.Tensor, degrees, method: str, size, role: str | None):
    """The values of ``f`` (``role=None``), or of the three ``(r x grad f)_j`` (``"rotation"``) or
    ``d_j f`` (``"gradient"``), from ``x [..., D]``, with a new dim of 3 before the points; on the
    grid, as the two parts of :func:`bracket_synthesis`."""
    if role is None:
        return _synthesis(x, degrees, method, size)
    if method == "grid":  # not halves: the parts that each parity of coefficients makes
        from_even, from_odd = cached_matrices(bracket_synthesis, degrees, size, role, dtype=x.dtype, device=x.device)
        n_even = from_even.shape[0]
        return (x[..., :n_even] @ from_even).unflatten(-1, (3, -1)), (x[..., n_even:] @ from_odd).unflatten(-1, (3, -1))
    rotation, gradient = cached_matrices(bracket_matrices, degrees, dtype=x.dtype, device=x.device)
    if role == "rotation":
        return _synthesis((x @ rotation).unflatten(-1, (3, -1)), degrees, method, size)
    return _synthesis((x @ gradient).unflatten(-1, (3, -1)), lowered(degrees), method, size)


def combine(f, g, method: str, bracket: bool):
    """``f g``, or the bracket ``{f, g} = sum_j (r x grad f)_j d_j g`` from the factors' values."""
    if not bracket:
        return _pointwise(f, g, method)
    if method == "fft":
        return (f * g).sum(-3)
    # Component j of f has halves (a_j, b_j) where the rotation keeps the mirror parity and
    # (b_j, a_j) where it flips it; the derivative of g keeps it exactly where the rotation
    # flips it, so the halves of sum_j f_j g_j come out the same for every j.
    (a, b), (a_g, b_g) = f, g
    return torch.addcmul(a * b_g, b, a_g).sum(-2), torch.addcmul(a * a_g, b, b_g).sum(-2)
