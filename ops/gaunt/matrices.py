"""The exact conversion matrices of the Gaunt products (coefficients, not code that runs them):
spherical-harmonic coefficients to values on a sphere grid or a 2D torus and back, and to
the factors of the Poisson bracket. A plain description that the reference and the backends
(:mod:`equinet.ops.kernels`) share.

Every builder returns float64 CPU tensors for a hashable description of its shape;
:func:`cached_matrices` casts them once per dtype and device. Coefficients are in the
"module order" of each degree list: per channel, the components with ``l + m`` even first,
then the odd ones (:func:`components`).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from ..sh import spherical_harmonics

__all__ = [
    "bracket_matrices",
    "bracket_synthesis",
    "cached_matrices",
    "components",
    "degree_selection",
    "fft_size",
    "fourier_analysis",
    "fourier_synthesis",
    "full_grid_transforms",
    "grid_analysis",
    "grid_size",
    "grid_synthesis",
    "lowered",
    "num_values",
    "transform_size",
]


def components(degrees: tuple[int, ...]) -> tuple[list[int], int]:
    """Columns of ``spherical_harmonics(max(degrees))`` for ``degrees``, in the order used
    of the Gaunt products (components with ``l + m`` even first, then odd), and how many are even.

    ``m`` is e3nn's index within the degree (``-l..l``); with ``y`` as polar axis, ``Y_lm`` is
    even under ``y -> -y`` when ``l + m`` is even.
    """
    columns = [(l * l + l + m, (l + m) % 2) for l in degrees for m in range(-l, l + 1)]
    even = [column for column, odd in columns if not odd]
    return even + [column for column, odd in columns if odd], len(even)


def grid_size(band_limit: int) -> tuple[int, int]:
    """(theta nodes, phi nodes) of the smallest grid exact for degree ``band_limit``.

    Uniform phi with ``D + 1`` points integrates ``e^{i m phi}``, ``|m| <= D``, exactly; what is
    left is a polynomial of degree ``<= D`` in ``cos(theta)``, which ``ceil((D + 1) / 2)``
    Gauss–Legendre nodes integrate exactly. An even node count keeps the equator off the
    grid, so the grid is two mirror halves.
    """
    return 2 * math.ceil((band_limit + 1) / 4), band_limit + 1


@lru_cache(maxsize=None)
def _northern_grid(band_limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``[P/2, 3]`` of the northern half (``y > 0``) and their quadrature weights ``[P/2]``
    (the whole grid's weights sum to ``4 pi``)."""
    n_theta, n_phi = grid_size(band_limit)
    nodes, weights = np.polynomial.legendre.leggauss(n_theta)
    cos_theta = torch.from_numpy(nodes[n_theta // 2 :])  # the positive half
    weights = torch.from_numpy(weights[n_theta // 2 :]) * (2 * math.pi / n_phi)
    phi = torch.arange(n_phi, dtype=torch.float64) * (2 * math.pi / n_phi)
    sin_theta = (1 - cos_theta.square()).sqrt()
    points = torch.stack(
        [
            sin_theta[:, None] * torch.sin(phi),
            cos_theta[:, None].expand(-1, n_phi),
            sin_theta[:, None] * torch.cos(phi),
        ],
        dim=-1,
    )
    return points.reshape(-1, 3), weights[:, None].expand(-1, n_phi).reshape(-1)


@lru_cache(maxsize=None)
def grid_synthesis(degrees: tuple[int, ...], band_limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Y_even [De, P/2], Y_odd [Do, P/2])``: coefficients (module order) → values on the northern half."""
    points, _ = _northern_grid(band_limit)
    columns, n_even = components(degrees)
    y = spherical_harmonics(max(degrees), points)[:, columns].T.contiguous()
    return y[:n_even].contiguous(), y[n_even:].contiguous()


@lru_cache(maxsize=None)
def grid_analysis(degrees: tuple[int, ...], band_limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P_even [P/2, De], P_odd [P/2, Do])``: ``(h_north ± h_south) / 2 @ P`` = ``(1/4pi) int h Y``."""
    points, weights = _northern_grid(band_limit)
    columns, n_even = components(degrees)
    p = spherical_harmonics(max(degrees), points)[:, columns] * (weights / (2 * math.pi))[:, None]
    return p[:, :n_even].contiguous(), p[:, n_even:].contiguous()


def _fast_size(n: int) -> int:
    """Smallest ``m >= n`` with no prime factor above 5 (a fast FFT length)."""
    m = n
    while True:
        rest = m
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return m
        m += 1


def _torus_harmonics(l_max: int, n: int) -> torch.Tensor:
    """``Y(theta, phi) [n, n, (l_max+1)^2]`` on the uniform torus grid, theta over a full period."""
    angle = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    theta, phi = angle[:, None], angle[None, :]
    points = torch.stack(
        [torch.sin(theta) * torch.sin(phi), torch.cos(theta).expand(n, n), torch.sin(theta) * torch.cos(phi)], dim=-1
    )
    return spherical_harmonics(l_max, points, normalize=False)


@lru_cache(maxsize=None)
def fourier_synthesis(degrees: tuple[int, ...]) -> tuple[torch.Tensor]:
    """``S [D, (2L+1) (L+1) 2]``: coefficients (module order) → 2D Fourier coefficients
    ``F[u, v]`` (real and imaginary parts) for ``u`` in FFT order ``0..L, -L..-1`` and
    ``v = 0..L``, where ``f(theta, phi) = sum F[u, v] e^{i (u theta + v phi)}``.

    ``Y_lm`` is a trigonometric polynomial of degree ``l`` in theta and in phi, so a DFT on
    ``2L + 2`` points per axis gives its coefficients exactly.
    """
    l_max = max(degrees)
    n = 2 * l_max + 2
    columns, _ = components(degrees)
    spectrum = torch.fft.fft2(_torus_harmonics(l_max, n)[..., columns], dim=(0, 1)) / n**2
    u = [*range(l_max + 1), *range(n - l_max, n)]
    spectrum = spectrum[u][:, : l_max + 1]  # [2L+1, L+1, D]
    return (torch.view_as_real(spectrum.permute(2, 0, 1).contiguous()).reshape(len(columns), -1),)


def _half_period_integrals(k: torch.Tensor) -> torch.Tensor:
    """``int_0^pi e^{i k theta} d theta`` for integer ``k``: pi, 0 (even k), 2i/k (odd k)."""
    k = k.double()
    odd = k.remainder(2) == 1
    imag = torch.where(odd, 2 / torch.where(odd, k, torch.ones_like(k)), torch.zeros_like(k))
    real = torch.where(k == 0, torch.full_like(k, math.pi), torch.zeros_like(k))
    return torch.complex(real, imag)


def _signed_frequencies(n: int) -> torch.Tensor:
    """The frequency of each FFT index: ``0, 1, ..., -2, -1``."""
    return torch.tensor([i if i <= n // 2 else i - n for i in range(n)])


@lru_cache(maxsize=None)
def fourier_analysis(degrees: tuple[int, ...], n_u: int) -> tuple[torch.Tensor]:
    """``M [n_u (L+1) 2, D]``: half spectrum ``H[u, v]`` (``u`` in FFT order over ``n_u``,
    ``v = 0..L``, real and imaginary parts) → ``(1/4pi) int h Y_LM dOmega``.

    ``(1/4pi) int_0^pi int_0^2pi e^{i(u theta + v phi)} Y sin(theta)`` is exact: ``Y sin(theta)`` is
    a trigonometric polynomial (coefficients by DFT), phi-integrals pick ``v' = -v``, and the
    theta-integrals over half a period are known in closed form. Modes with ``v < 0`` are the
    complex conjugates of those with ``v > 0`` (``h`` is real), hence the factor 2 on ``v > 0``
    and the real part.
    """
    l_max = max(degrees)
    n = 2 * l_max + 4  # Y sin(theta) has degree L + 1 in theta
    columns, _ = components(degrees)
    angle = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    samples = _torus_harmonics(l_max, n)[..., columns] * torch.sin(angle)[:, None, None]
    c = torch.fft.fft2(samples, dim=(0, 1)) / n**2  # c[u', v', k]
    u, u_prime = _signed_frequencies(n_u), _signed_frequencies(n)
    theta_integrals = _half_period_integrals(u[:, None] + u_prime[None, :])  # [n_u, n]
    minus_v = [(-v) % n for v in range(l_max + 1)]
    q = 0.5 * torch.einsum("ap,pvk->avk", theta_integrals, c[:, minus_v])  # (1/4pi) * 2pi
    q[:, 1:] *= 2
    return (torch.stack([q.real, -q.imag], dim=2).reshape(-1, len(columns)),)


def _full_grid(band_limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``[P, 3]`` of the whole grid (northern half, then its mirror image) and their weights ``[P]``."""
    north, weights = _northern_grid(band_limit)
    points = torch.cat([north, north * torch.tensor([1.0, -1.0, 1.0], dtype=north.dtype)])
    return points, torch.cat([weights, weights])


@lru_cache(maxsize=None)
def full_grid_transforms(degrees: tuple[int, ...], band_limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(S [D, P], A [P, D])`` on the whole grid (both halves): coefficients (module order) →
    values, and values → ``(1/4pi) int h Y``. For the Triton kernel, which does not split halves.

    ``P`` is padded with zero columns of ``S`` and rows of ``A`` to a multiple of 16, which adds
    nothing to the products, and both are contiguous along ``P`` (``A`` column-major): Triton
    then knows every grid tile is made of whole 16-byte runs, here and in the derivatives (which
    read the transposes), and copies them as such."""
    points, weights = _full_grid(band_limit)
    columns, _ = components(degrees)
    y = spherical_harmonics(max(degrees), points)[:, columns]
    padding = (0, 0, 0, -len(points) % 16)  # zero rows at the end of [P, D]
    synthesis, analysis = (torch.nn.functional.pad(m, padding) for m in (y, y * (weights / (4 * math.pi))[:, None]))
    return synthesis.T.contiguous(), analysis.T.contiguous().T


def lowered(degrees: tuple[int, ...]) -> tuple[int, ...]:
    """The degrees of the first derivatives of a function of ``degrees``: ``l - 1`` for ``l >= 1``."""
    return tuple(l - 1 for l in degrees if l > 0)


@lru_cache(maxsize=None)
def bracket_matrices(degrees: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(R [D, 3 D], G [D, 3 D'])``: the coefficients of ``f`` (module order, ``degrees``) → those
    of ``(r x grad f)_j`` (same degrees) and of ``d_j f`` (:func:`lowered` degrees), ``j = x, y, z``.

    ``f`` is extended off the sphere as the harmonic polynomial ``sum_lm x_lm |r|^l Y_lm``. Its
    partial derivatives are harmonic polynomials of degree ``l - 1`` and the rotation generators
    ``r x grad`` keep degree ``l``, so both are spherical functions that a grid exact for degree
    ``2 l_max`` projects exactly."""
    l_max = max(degrees)
    points, weights = _full_grid(2 * l_max)
    y = spherical_harmonics(l_max, points, normalize=False)
    columns, _ = components(degrees)
    jacobian = torch.func.vmap(torch.func.jacrev(lambda r: spherical_harmonics(l_max, r, normalize=False)))(points)
    gradients = jacobian[:, columns]  # [P, D, 3]
    rotations = torch.linalg.cross(points[:, None, :].expand_as(gradients), gradients, dim=-1)

    def project(values, to_degrees):  # [P, D, 3] → [D, 3 D_to]
        basis = y[:, components(to_degrees)[0]] * (weights / (4 * math.pi))[:, None]
        return torch.einsum("pdj,pk->djk", values, basis).flatten(1)

    return project(rotations, degrees), project(gradients, lowered(degrees))


@lru_cache(maxsize=None)
def degree_selection(degrees_from: tuple[int, ...], degrees_to: tuple[int, ...]) -> tuple[torch.Tensor]:
    """``[D_from, D_to]``: 0/1, the components of ``degrees_to`` picked from ``degrees_from``
    (module orders; zero columns for degrees not in ``degrees_from``)."""
    rows = {column: row for row, column in enumerate(components(degrees_from)[0])}
    selection = torch.zeros(len(rows), sum(2 * l + 1 for l in degrees_to), dtype=torch.float64)
    for j, column in enumerate(components(degrees_to)[0]):
        if column in rows:
            selection[rows[column], j] = 1.0
    return (selection,)


# Whether ``(r x grad)_j`` and ``d_j`` (j = x, y, z) keep a function's parity under the mirror
# ``y -> -y`` (the rotation about y and the derivatives along x and z do) or flip it.
_KEEPS_MIRROR_PARITY = {"rotation": (False, True, False), "gradient": (True, False, True)}


@lru_cache(maxsize=None)
def bracket_synthesis(degrees: tuple[int, ...], band_limit: int, role: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M_even [De, 3 P/2], M_odd [Do, 3 P/2])``: the coefficients of ``f`` with ``l + m`` even
    (odd) → values on the northern half of the three ``(r x grad f)_j`` (``role="rotation"``) or
    ``d_j f`` (``"gradient"``): :func:`bracket_matrices` composed with :func:`grid_synthesis`.

    Each operator keeps or flips the mirror parity, so for each ``j`` one parity of coefficients
    makes the even part of the result and the other parity its odd part: ``M_even`` holds the even
    part where the operator keeps the parity and the odd part where it flips it, ``M_odd`` the other."""
    rotation, gradient = bracket_matrices(degrees)
    matrix, degrees_to = (rotation, degrees) if role == "rotation" else (gradient, lowered(degrees))
    matrix = matrix.unflatten(1, (3, -1))  # [D, 3, D_to]
    y_even, y_odd = grid_synthesis(degrees_to, band_limit)
    even, odd = matrix[..., : y_even.shape[0]] @ y_even, matrix[..., y_even.shape[0] :] @ y_odd  # [D, 3, P/2]
    n_even, keep = components(degrees)[1], torch.tensor(_KEEPS_MIRROR_PARITY[role])[:, None]
    from_even = torch.where(keep, even[:n_even], odd[:n_even])
    from_odd = torch.where(keep, odd[n_even:], even[n_even:])
    return from_even.flatten(1), from_odd.flatten(1)


_CACHE: dict[tuple, tuple[torch.Tensor, ...]] = {}


def cached_matrices(builder, *args, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    """``builder(*args)`` (exact, float64) cast to ``dtype`` on ``device``, computed once."""
    key = (builder.__name__, args, dtype, device)
    if key not in _CACHE:
        _CACHE[key] = tuple(t.to(dtype=dtype, device=device) for t in builder(*args))
    return _CACHE[key]


def fft_size(degrees_a, degrees_b, degrees_out) -> tuple[int, int]:
    """(theta, phi) FFT lengths for the product of any two of the three functions read back on the
    degrees of the third (the forward product and both of its derivatives share the torus):
    ``>= 2(l_1 + l_2) + 1`` in theta for the two largest degrees, as every theta-frequency of a
    product is read back; ``>= l_a + l_b + L + 1`` in phi (and ``>= 2 max + 1``, to hold every
    function), as only phi-frequencies up to the degree read are read back and the others may alias."""
    l_small, l_1, l_2 = sorted(max(d) for d in (degrees_a, degrees_b, degrees_out))
    return _fast_size(2 * (l_1 + l_2) + 1), _fast_size(max(l_small + l_1 + l_2 + 1, 2 * l_2 + 1))


def transform_size(method: str, degrees_a, degrees_b, degrees_out):
    """The grid's band limit or the torus size: the same for the product and its derivatives."""
    if method == "grid":
        return max(degrees_a) + max(degrees_b) + max(degrees_out)
    return fft_size(degrees_a, degrees_b, degrees_out)


def num_values(method: str, size) -> int:
    """Values per function on the grid (one half, even and odd parts apart) or the torus."""
    if method == "grid":
        n_theta, n_phi = grid_size(size)
        return n_theta * n_phi // 2
    return size[0] * size[1]
