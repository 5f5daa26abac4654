"""Gaunt tensor products: products of spherical functions (Luo, Chen & Krishnapriyan,
ICLR 2024; Xie et al., "The Price of Freedom", ICML 2025).

A feature ``x`` with irreps ``l = 0, 1, 2, ...`` (one copy of each per channel) is the
spherical function ``f(r) = sum_lm x_lm Y_lm(r)`` (e3nn's real spherical harmonics,
component normalization, ``(1/4pi) int Y_lm Y_l'm' = delta``). The Gaunt tensor product
multiplies two such functions and reads the product back in the same basis:

    out_LM = (1/4pi) int f1 f2 Y_LM dOmega = sum (1/4pi) G(l1 m1, l2 m2, L M) x1_l1m1 x2_l2m2,

with the Gaunt coefficients ``G = int Y Y Y`` (:func:`gaunt_coefficients`). It is the
Clebsch–Gordan product with one fixed weight per path ``(l1, l2, L)``, restricted to the
paths with ``l1 + l2 + L`` even, and it costs O(L^4) per channel instead of O(L^6) because
the product is taken pointwise instead of path by path. Two ways are implemented, both exact
(to rounding) for every degree:

* ``method="grid"``: values on a sphere grid (Gauss–Legendre nodes in ``cos(theta)`` times
  a uniform grid in ``phi``), pointwise product, projection back by quadrature. The grid
  integrates ``f1 f2 Y_LM`` exactly: it has ``ceil((D+1)/2)`` (rounded up to even) nodes
  in theta and ``D+1`` in phi, ``D = l1_max + l2_max + L_max``. The polar axis is e3nn's
  ``y``, so the grid is symmetric under ``y -> -y``, under which ``Y_lm`` (e3nn's index
  ``m``) has sign ``(-1)^(l+m)``: functions are kept as their mirror-even and mirror-odd
  parts on the northern half, which halves the matrix products.
* ``method="fft"``: 2D Fourier coefficients in ``(theta, phi)`` (``theta`` extended to a
  full period, so ``Y_lm`` is a trigonometric polynomial of degree ``l`` in each), their
  2D convolution by ``torch.fft`` (real FFTs, sizes ``>= 2(l1_max + l2_max) + 1`` in theta
  and ``>= l1_max + l2_max + L_max + 1`` in phi, so nothing that is read back aliases), and
  the exact integral of each Fourier mode against ``Y_LM sin(theta)`` to return to the
  spherical-harmonic basis.

All conversion matrices are built once in float64 (from :func:`~equinet.ops.spherical_harmonics`,
so the conventions are e3nn's to the last sign) and cached per shape, dtype and device. The
product is one autograd function: on a CPU it runs through the batch in cache-sized chunks,
weights and layout changes included, and its gradients are Gaunt products again (the
product is symmetric in its three arguments), so it differentiates to any order without
storing grid values.

Parity. Give each input a sign ``s = p_l (-1)^l`` (``s = +1`` for the parity of spherical
harmonics, ``0e+1o+2e+...``; ``s = -1`` for ``0o+1e+2o+...``); every irrep of one input must
share it. Since ``G`` vanishes unless ``l1 + l2 + L`` is even, the Gaunt product gives output
degree ``L`` the parity ``s1 s2 (-1)^L`` only: it misses the CG paths with ``l1 + l2 + L`` odd,
such as ``1e`` from ``1o x 1o`` (the cross product), as "The Price of Freedom" points out.
:class:`GauntTensorProduct` makes those outputs from the Poisson bracket of the two functions,

    {f1, f2}(r) = r . (grad F1 x grad F2) = sum_j (r x grad F1)_j d_j F2,

with ``F = sum_lm x_lm |r|^l Y_lm`` the harmonic extension of ``f`` (on the sphere, the cross
product of the surface gradients). The form ``int h {f1, f2}`` is invariant under rotations,
changes sign under reflections and is antisymmetric, so it couples exactly the odd paths
(one invariant each); its factors ``(r x grad F1)_j`` (degree ``l1``) and ``d_j F2`` (degree
``l2 - 1``) are spherical functions again, so the same grid or torus computes it exactly.
(Xie et al., 2026, recover these paths with vector spherical harmonics in the same spirit.)

:class:`GauntManyBodyProduct` is the MACE many-body product done the same way: powers
``f^nu`` of one function, ``nu = 1..correlation``, taken pointwise on one grid.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from e3nn import o3

from .sh import spherical_harmonics

__all__ = ["GauntManyBodyProduct", "GauntTensorProduct", "METHODS", "gaunt_coefficients"]

METHODS = ("grid", "fft")
BACKENDS = ("torch", "triton", "cpp")  # of GauntTensorProduct
MANY_BODY_BACKENDS = ("torch", "triton")  # of GauntManyBodyProduct


# ----------------------------------------------------------------------------- coefficients


@lru_cache(maxsize=None)
def _gaunt64(l1: int, l2: int, l3: int) -> torch.Tensor:
    if (l1 + l2 + l3) % 2 or not abs(l1 - l2) <= l3 <= l1 + l2:
        return torch.zeros(2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1, dtype=torch.float64)
    # G is invariant and the invariants of l1 x l2 x l3 form one line, spanned by the
    # Wigner-3j symbol C: G = alpha C with alpha = <C, G> / <C, C>, and
    # <C, G> = int sum C Y Y Y, whose integrand is rotation invariant, hence constant.
    c = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
    point = torch.tensor([0.48, -0.6, 0.64], dtype=torch.float64)  # any point of the unit sphere
    y = spherical_harmonics(max(l1, l2, l3), point)
    y1, y2, y3 = (y[l * l : (l + 1) ** 2] for l in (l1, l2, l3))
    invariant = torch.einsum("abc,a,b,c->", c, y1, y2, y3)
    return 4 * math.pi * invariant / c.square().sum() * c


def gaunt_coefficients(l1: int, l2: int, l3: int) -> torch.Tensor:
    """Gaunt coefficients ``G[m1, m2, m3] = int Y_l1m1 Y_l2m2 Y_l3m3 dOmega``.

    e3nn's real spherical harmonics with component normalization and e3nn's order of
    ``m``; zero unless ``l1 + l2 + l3`` is even and the triangle inequality holds.

    Returns:
        ``[2 l1 + 1, 2 l2 + 1, 2 l3 + 1]``, float64.

    Example:
        >>> gaunt_coefficients(0, 1, 1)[0] / (4 * math.pi)   # Y_0 = 1
        tensor([[1., 0., 0.], [0., 1., 0.], [0., 0., 1.]], dtype=torch.float64)
    """
    for l in (l1, l2, l3):
        if not isinstance(l, int) or l < 0:
            raise ValueError(f"degrees must be non-negative integers, got {(l1, l2, l3)!r}")
    return _gaunt64(l1, l2, l3).clone()


# ----------------------------------------------------------------------------- conversion matrices
# Every builder returns float64 CPU tensors for a hashable description of its shape;
# `_matrices` casts them once per dtype and device.


def _components(degrees: tuple[int, ...]) -> tuple[list[int], int]:
    """Columns of ``spherical_harmonics(max(degrees))`` for ``degrees``, in the order used
    inside this module (components with ``l + m`` even first, then odd), and how many are even.

    ``m`` is e3nn's index within the degree (``-l..l``); with ``y`` as polar axis, ``Y_lm`` is
    even under ``y -> -y`` when ``l + m`` is even.
    """
    columns = [(l * l + l + m, (l + m) % 2) for l in degrees for m in range(-l, l + 1)]
    even = [column for column, odd in columns if not odd]
    return even + [column for column, odd in columns if odd], len(even)


def _grid_size(band_limit: int) -> tuple[int, int]:
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
    n_theta, n_phi = _grid_size(band_limit)
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
def _grid_synthesis(degrees: tuple[int, ...], band_limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Y_even [De, P/2], Y_odd [Do, P/2])``: coefficients (module order) → values on the northern half."""
    points, _ = _northern_grid(band_limit)
    columns, n_even = _components(degrees)
    y = spherical_harmonics(max(degrees), points)[:, columns].T.contiguous()
    return y[:n_even].contiguous(), y[n_even:].contiguous()


@lru_cache(maxsize=None)
def _grid_analysis(degrees: tuple[int, ...], band_limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P_even [P/2, De], P_odd [P/2, Do])``: ``(h_north ± h_south) / 2 @ P`` = ``(1/4pi) int h Y``."""
    points, weights = _northern_grid(band_limit)
    columns, n_even = _components(degrees)
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
def _fourier_synthesis(degrees: tuple[int, ...]) -> tuple[torch.Tensor]:
    """``S [D, (2L+1) (L+1) 2]``: coefficients (module order) → 2D Fourier coefficients
    ``F[u, v]`` (real and imaginary parts) for ``u`` in FFT order ``0..L, -L..-1`` and
    ``v = 0..L``, where ``f(theta, phi) = sum F[u, v] e^{i (u theta + v phi)}``.

    ``Y_lm`` is a trigonometric polynomial of degree ``l`` in theta and in phi, so a DFT on
    ``2L + 2`` points per axis gives its coefficients exactly.
    """
    l_max = max(degrees)
    n = 2 * l_max + 2
    columns, _ = _components(degrees)
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
def _fourier_analysis(degrees: tuple[int, ...], n_u: int) -> tuple[torch.Tensor]:
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
    columns, _ = _components(degrees)
    angle = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    samples = _torus_harmonics(l_max, n)[..., columns] * torch.sin(angle)[:, None, None]
    c = torch.fft.fft2(samples, dim=(0, 1)) / n**2  # c[u', v', k]
    u, u_prime = _signed_frequencies(n_u), _signed_frequencies(n)
    theta_integrals = _half_period_integrals(u[:, None] + u_prime[None, :])  # [n_u, n]
    minus_v = [(-v) % n for v in range(l_max + 1)]
    q = 0.5 * torch.einsum("ap,pvk->avk", theta_integrals, c[:, minus_v])  # (1/4pi) * 2pi
    q[:, 1:] *= 2
    return (torch.stack([q.real, -q.imag], dim=2).reshape(-1, len(columns)),)


_CACHE: dict[tuple, tuple[torch.Tensor, ...]] = {}


def _full_grid(band_limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``[P, 3]`` of the whole grid (northern half, then its mirror image) and their weights ``[P]``."""
    north, weights = _northern_grid(band_limit)
    points = torch.cat([north, north * torch.tensor([1.0, -1.0, 1.0], dtype=north.dtype)])
    return points, torch.cat([weights, weights])


@lru_cache(maxsize=None)
def _full_grid_transforms(degrees: tuple[int, ...], band_limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(S [D, P], A [P, D])`` on the whole grid (both halves): coefficients (module order) →
    values, and values → ``(1/4pi) int h Y``. For the Triton kernel, which does not split halves.

    ``P`` is padded with zero columns of ``S`` and rows of ``A`` to a multiple of 16, which adds
    nothing to the products, and both are contiguous along ``P`` (``A`` column-major): Triton
    then knows every grid tile is made of whole 16-byte runs, here and in the derivatives (which
    read the transposes), and copies them as such."""
    points, weights = _full_grid(band_limit)
    columns, _ = _components(degrees)
    y = spherical_harmonics(max(degrees), points)[:, columns]
    padding = (0, 0, 0, -len(points) % 16)  # zero rows at the end of [P, D]
    synthesis, analysis = (torch.nn.functional.pad(m, padding) for m in (y, y * (weights / (4 * math.pi))[:, None]))
    return synthesis.T.contiguous(), analysis.T.contiguous().T


def _lowered(degrees: tuple[int, ...]) -> tuple[int, ...]:
    """The degrees of the first derivatives of a function of ``degrees``: ``l - 1`` for ``l >= 1``."""
    return tuple(l - 1 for l in degrees if l > 0)


@lru_cache(maxsize=None)
def _bracket_matrices(degrees: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(R [D, 3 D], G [D, 3 D'])``: the coefficients of ``f`` (module order, ``degrees``) → those
    of ``(r x grad f)_j`` (same degrees) and of ``d_j f`` (:func:`_lowered` degrees), ``j = x, y, z``.

    ``f`` is extended off the sphere as the harmonic polynomial ``sum_lm x_lm |r|^l Y_lm``. Its
    partial derivatives are harmonic polynomials of degree ``l - 1`` and the rotation generators
    ``r x grad`` keep degree ``l``, so both are spherical functions that a grid exact for degree
    ``2 l_max`` projects exactly."""
    l_max = max(degrees)
    points, weights = _full_grid(2 * l_max)
    y = spherical_harmonics(l_max, points, normalize=False)
    columns, _ = _components(degrees)
    jacobian = torch.func.vmap(torch.func.jacrev(lambda r: spherical_harmonics(l_max, r, normalize=False)))(points)
    gradients = jacobian[:, columns]  # [P, D, 3]
    rotations = torch.linalg.cross(points[:, None, :].expand_as(gradients), gradients, dim=-1)

    def project(values, to_degrees):  # [P, D, 3] → [D, 3 D_to]
        basis = y[:, _components(to_degrees)[0]] * (weights / (4 * math.pi))[:, None]
        return torch.einsum("pdj,pk->djk", values, basis).flatten(1)

    return project(rotations, degrees), project(gradients, _lowered(degrees))


@lru_cache(maxsize=None)
def _degree_selection(degrees_from: tuple[int, ...], degrees_to: tuple[int, ...]) -> tuple[torch.Tensor]:
    """``[D_from, D_to]``: 0/1, the components of ``degrees_to`` picked from ``degrees_from``
    (module orders; zero columns for degrees not in ``degrees_from``)."""
    rows = {column: row for row, column in enumerate(_components(degrees_from)[0])}
    selection = torch.zeros(len(rows), sum(2 * l + 1 for l in degrees_to), dtype=torch.float64)
    for j, column in enumerate(_components(degrees_to)[0]):
        if column in rows:
            selection[rows[column], j] = 1.0
    return (selection,)


# Whether ``(r x grad)_j`` and ``d_j`` (j = x, y, z) keep a function's parity under the mirror
# ``y -> -y`` (the rotation about y and the derivatives along x and z do) or flip it.
_KEEPS_MIRROR_PARITY = {"rotation": (False, True, False), "gradient": (True, False, True)}


@lru_cache(maxsize=None)
def _bracket_synthesis(degrees: tuple[int, ...], band_limit: int, role: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M_even [De, 3 P/2], M_odd [Do, 3 P/2])``: the coefficients of ``f`` with ``l + m`` even
    (odd) → values on the northern half of the three ``(r x grad f)_j`` (``role="rotation"``) or
    ``d_j f`` (``"gradient"``): :func:`_bracket_matrices` composed with :func:`_grid_synthesis`.

    Each operator keeps or flips the mirror parity, so for each ``j`` one parity of coefficients
    makes the even part of the result and the other parity its odd part: ``M_even`` holds the even
    part where the operator keeps the parity and the odd part where it flips it, ``M_odd`` the other."""
    rotation, gradient = _bracket_matrices(degrees)
    matrix, degrees_to = (rotation, degrees) if role == "rotation" else (gradient, _lowered(degrees))
    matrix = matrix.unflatten(1, (3, -1))  # [D, 3, D_to]
    y_even, y_odd = _grid_synthesis(degrees_to, band_limit)
    even, odd = matrix[..., : y_even.shape[0]] @ y_even, matrix[..., y_even.shape[0] :] @ y_odd  # [D, 3, P/2]
    n_even, keep = _components(degrees)[1], torch.tensor(_KEEPS_MIRROR_PARITY[role])[:, None]
    from_even = torch.where(keep, even[:n_even], odd[:n_even])
    from_odd = torch.where(keep, odd[n_even:], even[n_even:])
    return from_even.flatten(1), from_odd.flatten(1)


def _matrices(builder, *args, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    """``builder(*args)`` (exact, float64) cast to ``dtype`` on ``device``, computed once."""
    key = (builder.__name__, args, dtype, device)
    if key not in _CACHE:
        _CACHE[key] = tuple(t.to(dtype=dtype, device=device) for t in builder(*args))
    return _CACHE[key]


# ----------------------------------------------------------------------------- grid transforms


# A function on the grid is kept as its mirror-even and mirror-odd parts on the northern
# half, ``even = (h_N + h_S) / 2`` and ``odd = (h_N - h_S) / 2`` (``None`` for zero): the
# components with ``l + m`` even make the first, the others the second, and a product needs
# no southern values (``(e1 + o1)(e2 + o2)`` and ``(e1 - o1)(e2 - o2)`` have even part
# ``e1 e2 + o1 o2`` and odd part ``e1 o2 + o1 e2``).
_Halves = tuple[torch.Tensor, "torch.Tensor | None"]


def _to_grid(x: torch.Tensor, degrees: tuple[int, ...], band_limit: int) -> _Halves:
    """``x [..., D]`` (module order) → its (even, odd) parts ``[..., P/2]`` on the grid."""
    y_even, y_odd = _matrices(_grid_synthesis, degrees, band_limit, dtype=x.dtype, device=x.device)
    n_even = y_even.shape[0]
    return x[..., :n_even] @ y_even, x[..., n_even:] @ y_odd if y_odd.shape[0] else None


def _multiply(a: _Halves, b: _Halves) -> _Halves:
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


def _from_grid(h: _Halves, degrees: tuple[int, ...], band_limit: int) -> torch.Tensor:
    """(even, odd) parts ``[..., P/2]`` → ``(1/4pi) int h Y [..., D]`` (module order), by quadrature."""
    even, odd = h
    p_even, p_odd = _matrices(_grid_analysis, degrees, band_limit, dtype=even.dtype, device=even.device)
    out = even @ p_even
    if p_odd.shape[1] == 0:
        return out
    out_odd = out.new_zeros(*out.shape[:-1], p_odd.shape[1]) if odd is None else odd @ p_odd
    return torch.cat([out, out_odd], dim=-1)


# ----------------------------------------------------------------------------- torus transforms


def _fft_size(degrees_a, degrees_b, degrees_out) -> tuple[int, int]:
    """(theta, phi) FFT lengths for the product of any two of the three functions read back on the
    degrees of the third (the forward product and both of its derivatives share the torus):
    ``>= 2(l_1 + l_2) + 1`` in theta for the two largest degrees, as every theta-frequency of a
    product is read back; ``>= l_a + l_b + L + 1`` in phi (and ``>= 2 max + 1``, to hold every
    function), as only phi-frequencies up to the degree read are read back and the others may alias."""
    l_small, l_1, l_2 = sorted(max(d) for d in (degrees_a, degrees_b, degrees_out))
    return _fast_size(2 * (l_1 + l_2) + 1), _fast_size(max(l_small + l_1 + l_2 + 1, 2 * l_2 + 1))


def _to_torus(x: torch.Tensor, degrees: tuple[int, ...], size: tuple[int, int]) -> torch.Tensor:
    """``x [..., D]`` (module order) → values ``[..., n_u, n_v]`` on the uniform torus grid, from
    its 2D Fourier coefficients by an inverse real FFT."""
    (synthesis,) = _matrices(_fourier_synthesis, degrees, dtype=x.dtype, device=x.device)
    l_max, (n_u, n_v) = max(degrees), size
    spectrum = torch.view_as_complex((x @ synthesis).unflatten(-1, (2 * l_max + 1, l_max + 1, 2)))
    gap = spectrum.new_zeros(*spectrum.shape[:-2], n_u - 2 * l_max - 1, l_max + 1)
    spectrum = torch.cat([spectrum[..., : l_max + 1, :], gap, spectrum[..., l_max + 1 :, :]], dim=-2)
    return torch.fft.irfft2(spectrum, s=(n_u, n_v), norm="forward")  # v is zero-padded to n_v // 2 + 1


def _from_torus(values: torch.Tensor, degrees: tuple[int, ...]) -> torch.Tensor:
    """Values ``[..., n_u, n_v]`` → ``(1/4pi) int h Y`` ``[..., D]`` (module order): the Fourier
    coefficients by a real FFT, then the exact Fourier → spherical-harmonic map."""
    (analysis,) = _matrices(_fourier_analysis, degrees, values.shape[-2], dtype=values.dtype, device=values.device)
    spectrum = torch.fft.rfft2(values, norm="forward")[..., : max(degrees) + 1]
    return torch.view_as_real(spectrum).flatten(-3) @ analysis


# ----------------------------------------------------------------------------- the product


def _transform_size(method: str, degrees_a, degrees_b, degrees_out):
    """The grid's band limit or the torus size: the same for the product and its derivatives."""
    if method == "grid":
        return max(degrees_a) + max(degrees_b) + max(degrees_out)
    return _fft_size(degrees_a, degrees_b, degrees_out)


def _points(method: str, size) -> int:
    """Values per function on the grid (one half, even and odd parts apart) or the torus."""
    if method == "grid":
        n_theta, n_phi = _grid_size(size)
        return n_theta * n_phi // 2
    return size[0] * size[1]


def _synthesis(x: torch.Tensor, degrees, method: str, size):
    """``x [..., D]`` (module order) → its values: (even, odd) halves on the grid, or the torus."""
    return _to_grid(x, degrees, size) if method == "grid" else _to_torus(x, degrees, size)


def _pointwise(f, g, method: str):
    """The product of two functions' values."""
    return _multiply(f, g) if method == "grid" else f * g


def _analysis(values, degrees, method: str, size) -> torch.Tensor:
    """Values → ``(1/4pi) int h Y`` ``[..., D]`` (module order)."""
    return _from_grid(values, degrees, size) if method == "grid" else _from_torus(values, degrees)


def _factor(x: torch.Tensor, degrees, method: str, size, role: str | None):
    """The values of ``f`` (``role=None``), or of the three ``(r x grad f)_j`` (``"rotation"``) or
    ``d_j f`` (``"gradient"``), from ``x [..., D]``, with a new dim of 3 before the points; on the
    grid, as the two parts of :func:`_bracket_synthesis`."""
    if role is None:
        return _synthesis(x, degrees, method, size)
    if method == "grid":  # not halves: the parts that each parity of coefficients makes
        from_even, from_odd = _matrices(_bracket_synthesis, degrees, size, role, dtype=x.dtype, device=x.device)
        n_even = from_even.shape[0]
        return (x[..., :n_even] @ from_even).unflatten(-1, (3, -1)), (x[..., n_even:] @ from_odd).unflatten(-1, (3, -1))
    rotation, gradient = _matrices(_bracket_matrices, degrees, dtype=x.dtype, device=x.device)
    if role == "rotation":
        return _synthesis((x @ rotation).unflatten(-1, (3, -1)), degrees, method, size)
    return _synthesis((x @ gradient).unflatten(-1, (3, -1)), _lowered(degrees), method, size)


def _combine(f, g, method: str, bracket: bool):
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


def _channel_sum(values: torch.Tensor, layout: _Layout) -> torch.Tensor:
    """``values [n, C, D]`` summed over the channels for a one-channel feature."""
    return values.sum(1, keepdim=True) if values.shape[1] != layout.channels else values


def _write(values: torch.Tensor, layout: _Layout, out: torch.Tensor) -> None:
    """``values [n, C, D]`` (module order) into the rows ``out [n, channels * D]`` (e3nn layout):
    :meth:`_Layout.merge` written in place."""
    torch.index_select(_channel_sum(values, layout).flatten(1), 1, layout.scatter, out=out)


# On a CPU the grid values of a large batch do not fit in cache, and streaming them
# through memory for each elementwise step (and saving them for the backward pass) costs
# more than the matrix products. So the product runs in chunks of about this many values
# per function, reading and writing e3nn's layout and applying the weights chunk by chunk,
# and saves only its inputs.
_CHUNK_VALUES = 1 << 17


def _row_chunks(num: int, channels: int, points: int, device: torch.device) -> list[slice]:
    """Row ranges of the chunks (none for an empty batch, which MKL's FFT would reject)."""
    step = max(1, _CHUNK_VALUES // (channels * points)) if device.type == "cpu" else max(1, num)
    return [slice(start, start + step) for start in range(0, num, step)]


class _GauntProduct(torch.autograd.Function):
    """``out = merge_o(s_o * G(split_a(x_a) * s_a, split_b(x_b) * s_b))`` with autograd, to any order.

    ``x_a [N, dim_a]``, ``x_b [N, dim_b]`` in e3nn's layout, per-component scales ``s [channels, D]``
    (the per-degree weights spread over components), ``G`` the Gaunt product ``(1/4pi) int f_a f_b Y``
    (or, with ``bracket``, ``(1/4pi) int {f_a, f_b} Y``) channel by channel, ``layouts`` the three
    features' :class:`_Layout`; → ``[N, dim_o]``.

    The Gaunt product is symmetric in its three arguments, so its derivative in ``x_a`` is the
    product of ``x_b`` and the output gradient read on the degrees of ``a`` (exact on the same
    grid or torus: the band limit does not change), and so on for higher orders. A backward
    pass that builds no graph goes through the batch once, taking each of the three functions
    to the grid once per chunk. The bracket form ``int h {f, g}`` is cyclic and antisymmetric
    (``= int f {g, h} = -int g {f, h}``), so its derivatives are brackets again.
    """

    @staticmethod
    def forward(ctx, x_a, x_b, s_a, s_b, s_o, layouts: tuple[_Layout, _Layout, _Layout], method: str, bracket: bool,
                backend: str = "torch"):
        ctx.save_for_backward(x_a, x_b, s_a, s_b, s_o)
        ctx.layouts, ctx.method, ctx.bracket, ctx.backend = layouts, method, bracket, backend
        a, b, o = layouts
        size = _transform_size(method, a.degrees, b.degrees, o.degrees)
        out = torch.empty(x_a.shape[0], o.channels * s_o.shape[1], dtype=x_a.dtype, device=x_a.device)
        first, second = ("rotation", "gradient") if bracket else (None, None)
        if backend == "cpp":
            _cpp_pass([(x_a, s_a, a, first), (x_b, s_b, b, second)], [(0, 1, (s_o, o), 1.0, out, None)], size, bracket)
            return out
        channels = max(a.channels, b.channels) * (3 if bracket else 1)
        for rows in _row_chunks(x_a.shape[0], channels, _points(method, size), x_a.device):
            f_a = _factor(a.split(x_a[rows]) * s_a, a.degrees, method, size, first)
            f_b = _factor(b.split(x_b[rows]) * s_b, b.degrees, method, size, second)
            _write(_analysis(_combine(f_a, f_b, method, bracket), o.degrees, method, size) * s_o, o, out[rows])
        return out

    @staticmethod
    def backward(ctx, grad):
        x_a, x_b, s_a, s_b, s_o = ctx.saved_tensors
        needs = ctx.needs_input_grad[:5]
        args = (x_a, x_b, s_a, s_b, s_o, grad.contiguous(), ctx.layouts, ctx.method, ctx.bracket)
        if torch.is_grad_enabled():  # create_graph: differentiable
            grads = _composed_backward(*args, needs, ctx.backend)
        else:
            grads = (_cpp_fused_backward if ctx.backend == "cpp" else _fused_backward)(*args, needs)
        return (*grads, None, None, None, None)


def _composed_backward(x_a, x_b, s_a, s_b, s_o, grad, layouts, method, bracket, needs, backend) -> list:
    """The gradients of :class:`_GauntProduct` as Gaunt products (or brackets) again, differentiable."""
    a, b, o = layouts
    grads = [None] * 5

    def weight_gradient(x, u, layout):  # d/ds of sum(u * x * s), per (channel, component)
        return layout.split((x * u).sum(0))

    if needs[0] or needs[2]:
        u_a = _GauntProduct.apply(x_b, grad, s_b, s_o, torch.ones_like(s_a), (b, o, a), method, bracket, backend)
        grads[0] = u_a * s_a.flatten().index_select(0, a.scatter) if needs[0] else None
        grads[2] = weight_gradient(x_a, u_a, a) if needs[2] else None
    if needs[1] or needs[3]:
        u_b = _GauntProduct.apply(x_a, grad, s_a, s_o, torch.ones_like(s_b), (a, o, b), method, bracket, backend)
        u_b = -u_b if bracket else u_b
        grads[1] = u_b * s_b.flatten().index_select(0, b.scatter) if needs[1] else None
        grads[3] = weight_gradient(x_b, u_b, b) if needs[3] else None
    if needs[4]:
        forward = _GauntProduct.apply(x_a, x_b, s_a, s_b, torch.ones_like(s_o), layouts, method, bracket, backend)
        grads[4] = weight_gradient(grad, forward, o)
    return grads


def _fused_backward(x_a, x_b, s_a, s_b, s_o, grad, layouts, method, bracket, needs) -> list:
    """The gradients of :class:`_GauntProduct` in one pass over the batch, no graph. For the
    bracket, ``d/dx_a = {f_b, h}``, ``d/dx_b = -{f_a, h}`` and ``d/ds_o = {f_a, f_b}`` (read on
    the degrees of each), so ``f_a`` and ``f_b`` are needed as rotations, ``h`` (and ``f_b``,
    for ``s_o``) as gradients."""
    a, b, o = layouts
    size = _transform_size(method, a.degrees, b.degrees, o.degrees)
    grad_x_a = torch.empty_like(x_a, memory_format=torch.contiguous_format) if needs[0] else None
    grad_x_b = torch.empty_like(x_b, memory_format=torch.contiguous_format) if needs[1] else None
    grad_s = [torch.zeros_like(s) if need else None for s, need in zip((s_a, s_b, s_o), needs[2:])]
    wanted = [grad_x is not None or grad_s[i] is not None for i, grad_x in enumerate((grad_x_a, grad_x_b, None))]
    channels = max(a.channels, b.channels) * (3 if bracket else 1)
    first, second = ("rotation", "gradient") if bracket else (None, None)
    for rows in _row_chunks(x_a.shape[0], channels, _points(method, size), x_a.device):
        raw_a, raw_b, raw_o = a.split(x_a[rows]), b.split(x_b[rows]), o.split(grad[rows])
        f_a = _factor(raw_a * s_a, a.degrees, method, size, first) if wanted[1] or wanted[2] else None
        f_b = _factor(raw_b * s_b, b.degrees, method, size, first) if wanted[0] or (wanted[2] and not bracket) else None
        g_b = _factor(raw_b * s_b, b.degrees, method, size, second) if bracket and wanted[2] else f_b  # the product: f_b
        g_o = _factor(raw_o * s_o, o.degrees, method, size, second) if wanted[0] or wanted[1] else None
        for i, (raw, s, layout, f, g, sign, grad_x) in enumerate(
            ((raw_a, s_a, a, f_b, g_o, 1, grad_x_a), (raw_b, s_b, b, f_a, g_o, -1 if bracket else 1, grad_x_b),
             (raw_o, s_o, o, f_a, g_b, 1, None))
        ):
            if not wanted[i]:
                continue
            u = _channel_sum(_analysis(_combine(f, g, method, bracket), layout.degrees, method, size), layout)
            u = -u if sign < 0 else u
            if grad_x is not None:
                _write(u * s, layout, grad_x[rows])
            if grad_s[i] is not None:
                grad_s[i] += (raw * u).sum(0)
    return [grad_x_a, grad_x_b, *grad_s]


def _padded(matrix: torch.Tensor) -> torch.Tensor:
    """``matrix`` with zero columns appended to a multiple of 16 (one vector of the C++ kernel)."""
    return torch.nn.functional.pad(matrix, (0, -matrix.shape[1] % 16))


@lru_cache(maxsize=None)
def _cpp_synthesis(degrees: tuple[int, ...], band_limit: int, role: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The synthesis matrices of :func:`_factor` on the grid (even, odd components), padded."""
    if role is None:
        return tuple(_padded(m) for m in _grid_synthesis(degrees, band_limit))
    return tuple(_padded(m) for m in _bracket_synthesis(degrees, band_limit, role))


@lru_cache(maxsize=None)
def _cpp_analysis(degrees: tuple[int, ...], band_limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The analysis matrices of :func:`_from_grid` (even, odd components), padded."""
    return tuple(_padded(m) for m in _grid_analysis(degrees, band_limit))


def _cpp_tables(layout: _Layout, s: torch.Tensor, matrices: tuple[torch.Tensor, torch.Tensor], swap: bool = False):
    """A feature's description for the C++ kernel, ``[positions, matrix, scales]`` per half (even,
    then odd components; ``swap`` exchanges them): the positions ``[channels, K]`` of its components
    in a row of e3nn's layout, the half's matrix, its scales ``[channels or 1, K]``."""
    n_even = _components(layout.degrees)[1]
    halves = [slice(0, n_even), slice(n_even, None)]
    if swap:
        matrices, halves = matrices[::-1], halves[::-1]
    positions = layout.gather.view(layout.channels, layout.dim)
    return [t for half, m in zip(halves, matrices) for t in (positions[:, half].contiguous(), m, s[:, half].contiguous())]


def _cpp_pass(factors: list, products: list, size: int, bracket: bool) -> list:
    """One pass of the C++ kernel over the batch.

    ``factors``: ``(x [N, dim], s [C or 1, D], layout, role)``, the functions taken to the grid
    (``role`` as in :func:`_factor`); ``products``: ``(first, second, (s, layout), sign, out, raw)``,
    each writing ``out = sign * s * G(f_first, f_second)`` in the layout (``G`` the Gaunt product, or
    the bracket with ``f_first`` as rotations and ``f_second`` as gradients; summed over the channels
    for a one-channel layout) if ``out`` is given. Returns, per product, the gradient of its scales
    ``sum_n raw * sign * G`` ``[channels, D]`` if ``raw`` is given, else None."""
    from .kernels import cpp_gaunt_product

    empty = factors[0][0].new_empty(0)
    factor_tables = []
    for x, s, layout, role in factors:
        matrices = _matrices(_cpp_synthesis, layout.degrees, size, role, dtype=x.dtype, device=x.device)
        # The bracket's halves (a_j, b_j) of f_first meet (b_j, a_j) of f_second (see _combine).
        factor_tables.append([x.contiguous(), *_cpp_tables(layout, s, matrices, swap=role == "gradient")])
    product_tables, weight_grads = [], []
    for _, _, (s, layout), _, out, raw in products:
        tables = _cpp_tables(layout, s, _matrices(_cpp_analysis, layout.degrees, size, dtype=s.dtype, device=s.device))
        grads = [tables[2].new_zeros(tables[2].shape), tables[5].new_zeros(tables[5].shape)] if raw is not None else None
        weight_grads.append(grads)
        raw = empty if raw is None else raw.contiguous()
        product_tables.append([*tables, empty if out is None else out, raw, *(grads or (empty, empty))])
    channels = max(layout.channels for _, _, layout, _ in factors)
    cpp_gaunt_product()(
        factor_tables, product_tables, [p[0] for p in products], [p[1] for p in products], [float(p[3]) for p in products],
        channels, 3 if bracket else 1, _points("grid", size),
    )  # fmt: skip
    return [None if grads is None else torch.cat(grads, dim=1) for grads in weight_grads]


def _cpp_fused_backward(x_a, x_b, s_a, s_b, s_o, grad, layouts, method, bracket, needs) -> list:
    """The gradients of :class:`_GauntProduct` in one pass of the C++ kernel (as :func:`_fused_backward`), no graph."""
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
    size = _transform_size(method, a.degrees, b.degrees, o.degrees)
    for i, weight_grad in zip(wanted, _cpp_pass([functions[name] for name in names], products, size, bracket)):
        grads[i + 2] = weight_grad
    return grads


# ----------------------------------------------------------------------------- irreps checks


def _as_irreps(irreps, name: str) -> o3.Irreps:
    try:
        return o3.Irreps(irreps)
    except (ValueError, AssertionError, TypeError) as error:
        raise ValueError(f"{name} must be e3nn irreps such as '8x0e+8x1o+8x2e', got {irreps!r} ({error})") from None


def _spherical_function(irreps: o3.Irreps, name: str, example: str, one_sign: bool = True) -> tuple[int, tuple[int, ...], int]:
    """Check that ``irreps`` is ``C x (l_1 + l_2 + ...)``, each degree once, and (if ``one_sign``)
    one parity sign; return ``(C, degrees, s)`` with ``s = p (-1)^l`` (+1 for spherical-harmonic
    parity) of its first irrep."""
    muls = {mul for mul, _ in irreps}
    degrees = tuple(ir.l for _, ir in irreps)
    signs = [ir.p * (-1) ** ir.l for _, ir in irreps]
    if len(irreps) == 0 or len(muls) != 1 or 0 in muls or len(set(degrees)) != len(degrees):
        raise ValueError(
            f"{name} '{irreps}' must have one multiplicity C for every irrep and each degree once (e.g. '{example}')"
        )
    if one_sign and len(set(signs)) != 1:
        raise ValueError(
            f"{name} '{irreps}' mixes parities: a Gaunt product needs every degree l with parity (-1)^l "
            "(0e+1o+2e+...) or every degree with parity -(-1)^l (0o+1e+2o+...)"
        )
    return muls.pop(), degrees, signs[0]


def _gaunt_reachable(degrees_a, degrees_b) -> set[int]:
    """Degrees L with a Gaunt coefficient (l_a, l_b, L) that is not zero."""
    return {L for la in degrees_a for lb in degrees_b for L in range(abs(la - lb), la + lb + 1, 2)}


def _bracket_reachable(degrees_a, degrees_b) -> set[int]:
    """Degrees L that the bracket of degrees l_a and l_b reaches: the odd paths, ``l_a + l_b + L`` odd."""
    return {L for la in degrees_a for lb in degrees_b for L in range(abs(la - lb) + 1, la + lb, 2)}


def _layout_index(irreps: o3.Irreps, degrees: tuple[int, ...]) -> torch.Tensor:
    """``index [C * D]``: for channel c and component k (module order), its position in e3nn's layout."""
    columns, _ = _components(degrees)
    starts, position = {}, 0
    for mul, ir in irreps:
        starts[ir.l] = position
        position += mul * ir.dim
    channels = irreps[0].mul
    index = []
    for c in range(channels):
        for column in columns:
            l = math.isqrt(column)
            index.append(starts[l] + c * (2 * l + 1) + column - l * l)
    return torch.tensor(index)


def _degree_index(degrees: tuple[int, ...]) -> torch.Tensor:
    """For each component (module order), the position of its degree in ``degrees``."""
    columns, _ = _components(degrees)
    return torch.tensor([degrees.index(math.isqrt(column)) for column in columns])


class _Layout(torch.nn.Module):
    """Moves a ``C x (l_1 + l_2 + ...)`` feature between e3nn's layout ``[..., irreps.dim]`` and
    the module's ``[..., C, D]`` (per channel, components with ``l + m`` even first)."""

    def __init__(self, irreps: o3.Irreps, degrees: tuple[int, ...]):
        super().__init__()
        self.channels, self.dim, self.degrees = irreps[0].mul, irreps.dim // irreps[0].mul, degrees
        gather = _layout_index(irreps, degrees)
        self.register_buffer("gather", gather, persistent=False)
        self.register_buffer("scatter", torch.argsort(gather), persistent=False)
        self.register_buffer("degree", _degree_index(degrees), persistent=False)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(-1, self.gather).unflatten(-1, (self.channels, self.dim))

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(-2).index_select(-1, self.scatter)


# ----------------------------------------------------------------------------- modules


class _OutputPart(torch.nn.Module):
    """The irreps of a product's output that one form makes (the Gaunt product, or the bracket),
    each degree once: their :class:`_Layout` and, per component, the index of its irrep in the
    whole output (``weight_index``)."""

    def __init__(self, irreps_out: o3.Irreps, positions: list[int], bracket: bool):
        super().__init__()
        self.bracket, self.irreps = bracket, o3.Irreps([irreps_out[i] for i in positions])
        _, degrees, _ = _spherical_function(self.irreps, "irreps_out", "16x0e+16x1o+16x1e+16x2e")
        self.layout = _Layout(self.irreps, degrees)
        self.register_buffer("weight_index", torch.tensor(positions)[self.layout.degree], persistent=False)


class GauntTensorProduct(torch.nn.Module):
    """Channel-wise Gaunt tensor product with learnable per-degree weights.

    For each channel c, with ``f1_c = sum_l w1[c, l] sum_m x1[c, l, m] Y_lm`` (and ``f2`` alike),

        out[c, L, M] = w_out[c, L] (1/4pi) int f1_c f2_c Y_LM dOmega

    for the outputs of parity ``s1 s2 (-1)^L`` (the Gaunt paths, ``l1 + l2 + L`` even), and

        out[c, L, M] = w_out[c, L] (1/4pi) int {f1_c, f2_c} Y_LM dOmega

    for those of the other parity (the odd paths, e.g. ``1o x 1o -> 1e``, the cross product),
    with the bracket ``{f, g} = r . (grad f x grad g)`` of the functions' harmonic extensions.
    Both parities of a degree may be asked for (``16x1o+16x1e``): then every path of the CG
    product is coupled, with one weight per degree instead of one per path.

    Args:
        irreps_in1: ``C x (l_1 + l_2 + ...)``, each degree once, all with parity ``(-1)^l``
            or all with ``-(-1)^l`` (e.g. ``16x0e+16x1o+16x2e``).
        irreps_in2: the same form with multiplicity C (channel c meets channel c) or
            multiplicity 1 (one function, e.g. edge spherical harmonics, shared by all channels).
        irreps_out: ``C x (L_1 + ...)``, each irrep once; each must be reachable: parity
            ``s1 s2 (-1)^L`` with ``|l1 - l2| <= L <= l1 + l2`` and ``l1 + l2 + L`` even, or the
            other parity with ``|l1 - l2| < L < l1 + l2`` and ``l1 + l2 + L`` odd (see the module
            docstring).
        method: ``"grid"`` (sphere grid, default, faster) or ``"fft"`` (2D Fourier basis).
        backend: ``"torch"`` or, with ``method="grid"``, ``"triton"`` (one fused GPU kernel,
            :mod:`equinet.ops.kernels.gaunt_grid`; the bracket as three of its products) or
            ``"cpp"`` (one fused CPU kernel, compiled on first use,
            :mod:`equinet.ops.kernels.cpp_build`); same weights, same result.

    Shapes: ``x1: [..., irreps_in1.dim]``, ``x2: [..., irreps_in2.dim]`` (same leading
    shape) → ``[..., irreps_out.dim]``, in e3nn's layout. Weights ``weight_in1 [C, n1]``,
    ``weight_in2 [C or 1, n2]``, ``weight_out [C, n_out]`` (one per irrep, in irreps order)
    start at 1, so a fresh module is the plain Gaunt product. ``band_limit`` is
    ``l1_max + l2_max + L_max``; ``grid_size`` (grid) or ``fft_size`` (fft) the points used.
    The bracket costs about twice the Gaunt product (three derivatives of each input on the grid).

    Example:
        >>> tp = GauntTensorProduct("8x0e+8x1o+8x2e", "0e+1o+2e", "8x0e+8x1o+8x2e")
        >>> tp(tp.irreps_in1.randn(10, -1), tp.irreps_in2.randn(10, -1)).shape
        torch.Size([10, 72])
    """

    def __init__(self, irreps_in1, irreps_in2, irreps_out, method: str = "grid", backend: str = "torch"):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if backend != "torch" and method != "grid":
            raise ValueError(f"backend={backend!r} runs the sphere grid: it needs method='grid', not {method!r}")
        self.method, self.backend = method, backend
        if backend == "triton":
            from .kernels import triton_gaunt_grid_product

            self._triton_product = triton_gaunt_grid_product()
        self.irreps_in1 = _as_irreps(irreps_in1, "irreps_in1")
        self.irreps_in2 = _as_irreps(irreps_in2, "irreps_in2")
        self.irreps_out = _as_irreps(irreps_out, "irreps_out")
        channels, self.degrees1, sign1 = _spherical_function(self.irreps_in1, "irreps_in1", "16x0e+16x1o+16x2e")
        channels2, self.degrees2, sign2 = _spherical_function(self.irreps_in2, "irreps_in2", "16x0e+16x1o or 1x0e+1x1o")
        if len(self.irreps_out) == 0 or {mul for mul, _ in self.irreps_out} != {channels} or channels2 not in (channels, 1):
            raise ValueError(
                f"irreps_in2 '{self.irreps_in2}' must have multiplicity {channels} (channel-wise) or 1 (shared), and "
                f"irreps_out '{self.irreps_out}' multiplicity {channels}, as irreps_in1 '{self.irreps_in1}'"
            )
        self.degrees_out = tuple(ir.l for _, ir in self.irreps_out)
        gaunt, bracket = _gaunt_reachable(self.degrees1, self.degrees2), _bracket_reachable(self.degrees1, self.degrees2)
        positions = {False: [], True: []}  # irreps_out indices made by the Gaunt product, by the bracket
        for i, (_, ir) in enumerate(self.irreps_out):
            odd = ir.p != sign1 * sign2 * (-1) ** ir.l
            if ir.l not in (bracket if odd else gaunt):
                paths = "|l1 - l2| < L < l1 + l2 with l1 + l2 + L odd" if odd else "|l1 - l2| <= L <= l1 + l2 with l1 + l2 + L even"
                raise ValueError(
                    f"irreps_out has {ir}, which the product of '{self.irreps_in1}' and '{self.irreps_in2}' does not "
                    f"reach: it needs input degrees with {paths}; reachable: {self._reachable(gaunt, bracket, sign1 * sign2)}"
                )
            positions[odd].append(i)
        self.parts = torch.nn.ModuleList(_OutputPart(self.irreps_out, p, odd) for odd, p in positions.items() if p)
        # The parts' outputs side by side → e3nn's order of irreps_out.
        offset, starts = 0, {}
        for part_positions in positions.values():
            for i in part_positions:
                starts[i], offset = offset, offset + self.irreps_out[i].dim
        order = torch.cat([torch.arange(starts[i], starts[i] + self.irreps_out[i].dim) for i in range(len(self.irreps_out))])
        self.register_buffer("order", order, persistent=False)
        self.channels = channels
        self.layout1, self.layout2 = _Layout(self.irreps_in1, self.degrees1), _Layout(self.irreps_in2, self.degrees2)
        self.weight_in1 = torch.nn.Parameter(torch.ones(channels, len(self.degrees1)))
        self.weight_in2 = torch.nn.Parameter(torch.ones(channels2, len(self.degrees2)))
        self.weight_out = torch.nn.Parameter(torch.ones(channels, len(self.degrees_out)))
        self.band_limit = max(self.degrees1) + max(self.degrees2) + max(self.degrees_out)
        if method == "grid":
            self.grid_size = _grid_size(self.band_limit)  # (theta, phi) points
        else:
            self.fft_size = _fft_size(self.degrees1, self.degrees2, self.degrees_out)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        if x1.shape[-1] != self.irreps_in1.dim or x2.shape[-1] != self.irreps_in2.dim:
            raise ValueError(
                f"inputs have {x1.shape[-1]} and {x2.shape[-1]} features but irreps_in1 '{self.irreps_in1}' and "
                f"irreps_in2 '{self.irreps_in2}' have dims {self.irreps_in1.dim} and {self.irreps_in2.dim}"
            )
        if x1.shape[:-1] != x2.shape[:-1]:
            raise ValueError(f"x1 {tuple(x1.shape)} and x2 {tuple(x2.shape)} must have the same leading shape")
        if self.backend == "cpp":
            self._check_cpp_inputs(x1, x2)
        scale1 = self.weight_in1[:, self.layout1.degree]  # [C, D1], per component
        scale2 = self.weight_in2[:, self.layout2.degree]  # [C or 1, D2]
        batch = x1.shape[:-1]
        x1, x2 = x1.reshape(-1, x1.shape[-1]), x2.reshape(-1, x2.shape[-1])
        outs = []
        for part in self.parts:
            scale_out = self.weight_out[:, part.weight_index]  # [C, D_part]
            if self.backend == "triton":
                out = self._on_kernel(self.layout1.split(x1) * scale1, self.layout2.split(x2) * scale2, part)
                outs.append(part.layout.merge(out * scale_out))
            else:
                layouts = (self.layout1, self.layout2, part.layout)
                outs.append(
                    _GauntProduct.apply(x1, x2, scale1, scale2, scale_out, layouts, self.method, part.bracket, self.backend)
                )
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1).index_select(-1, self.order)
        return out.view(*batch, self.irreps_out.dim)

    def _check_cpp_inputs(self, x1: torch.Tensor, x2: torch.Tensor) -> None:
        """One-line errors for inputs that the C++ kernel cannot take."""
        if x1.device.type != "cpu" or x2.device.type != "cpu":
            raise ValueError(f"backend='cpp' runs on the CPU, but the inputs are on {x1.device}; use backend='triton' on a GPU")
        dtype = self.weight_in1.dtype
        if dtype not in (torch.float32, torch.float64) or not x1.dtype == x2.dtype == dtype:
            raise ValueError(
                f"backend='cpp' needs float32 or float64 inputs of the weights' dtype, got {x1.dtype} and {x2.dtype} "
                f"with {dtype} weights; cast the inputs or the module (module.to(dtype))"
            )

    def _on_kernel(self, a: torch.Tensor, b: torch.Tensor, part: _OutputPart) -> torch.Tensor:
        """``a [N, C, D1]``, ``b [N, C or 1, D2]`` (weighted) → ``[N, C, D_part]`` on the grid kernel; the
        bracket as the sum of the three products ``(r x grad f1)_j d_j f2``, with ``j`` folded into the channels."""

        def matrices(builder, *args):
            return _matrices(builder, *args, dtype=a.dtype, device=a.device)

        degrees2 = self.degrees2
        if part.bracket:
            a = (a @ matrices(_bracket_matrices, self.degrees1)[0]).unflatten(-1, (3, -1))  # [N, C, 3, D1]
            b = (b @ matrices(_bracket_matrices, degrees2)[1]).unflatten(-1, (3, -1))
            a, b, degrees2 = a.flatten(1, 2), b.expand(-1, self.channels, -1, -1).flatten(1, 2), _lowered(degrees2)
        (s1, _), (s2, _), (_, a3) = (
            matrices(_full_grid_transforms, degrees, self.band_limit) for degrees in (self.degrees1, degrees2, part.layout.degrees)
        )
        out = self._triton_product(a, b, s1, s2, a3)
        return out.unflatten(1, (-1, 3)).sum(2) if part.bracket else out

    @staticmethod
    def _reachable(gaunt: set[int], bracket: set[int], sign: int) -> str:
        """The irreps the product can make, e.g. ``0e+1o+1e+2e+2o``."""
        irreps = [o3.Irrep(L, sign * (-1) ** L) for L in gaunt] + [o3.Irrep(L, -sign * (-1) ** L) for L in bracket]
        return "+".join(str(ir) for ir in sorted(irreps, key=lambda ir: (ir.l, -ir.p * (-1) ** ir.l)))

    def extra_repr(self) -> str:
        return f"{self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out}, method={self.method!r}, backend={self.backend!r}"


def _power_variances(degrees_in: tuple[int, ...], degrees_out: tuple[int, ...], correlation: int) -> torch.Tensor:
    """``[correlation, n_out]``: variance per component of ``(1/4pi) int f^nu Y_LM`` for the
    Gaussian field ``f = (1/sqrt(D)) sum A_lm Y_lm``, A standard normal, float64.

    ``f`` has unit variance and correlation ``rho(t) = (1/D) sum_l (2l+1) P_l(t)`` between points
    at angle ``arccos t``; ``x^nu = sum_k c_k He_k(x)`` gives ``E[f^nu f'^nu] = sum_k c_k^2 k! rho^k``,
    and integrating over both points leaves ``(1/2) int_{-1}^1 E[f^nu f'^nu] P_L(t) dt``, a
    polynomial integral that Gauss–Legendre computes exactly.
    """
    dim = sum(2 * l + 1 for l in degrees_in)
    t, w = np.polynomial.legendre.leggauss(correlation * max(degrees_in) + max(degrees_out) + 2)
    rho = sum((2 * l + 1) * np.polynomial.legendre.Legendre.basis(l)(t) for l in degrees_in) / dim
    variances = np.zeros((correlation, len(degrees_out)))
    for order in range(1, correlation + 1):
        hermite = np.polynomial.hermite_e.poly2herme([0] * order + [1])
        moment = sum(c**2 * math.factorial(k) * rho**k for k, c in enumerate(hermite))
        for i, L in enumerate(degrees_out):
            variances[order - 1, i] = 0.5 * np.sum(w * moment * np.polynomial.legendre.Legendre.basis(L)(t))
    return torch.from_numpy(variances)


class GauntManyBodyProduct(torch.nn.Module):
    """MACE's many-body product as powers of a spherical function (the Gaunt replacement for
    :class:`~equinet.ops.SymmetricContraction`, same signature).

    For atom n of element z and channel c, with ``A[n, c]`` read as the function
    ``f(r) = (1/sqrt(D)) sum_l v[z, c, l] sum_m A[n, c, l, m] Y_lm(r)`` (``D`` = number of
    components, so unit-variance features give a unit-variance function),

        B[n, c, L, M] = sum_{nu=1..correlation} w[z, c, nu, L] k[nu, L] (1/4pi) int f^nu Y_LM dOmega,

    where the fixed ``k[nu, L]`` (buffer ``order_scale``) is zero where order nu cannot reach
    degree L with its parity, and otherwise gives each term, and their sum, a unit mean square
    per component when A and w are standard normal (exact, from the Hermite expansion of
    ``x^nu`` and the covariance of ``f``).

    ``f`` goes to one sphere grid once (exact for degree ``correlation * l_max + L_max``), its
    powers are taken pointwise and all of them are projected back in one matrix product. The
    product of ``nu`` copies of A couples through Gaunt coefficients only (paths with even
    degree sums), a subset of the symmetric contraction's couplings. ``B`` of an all-zero A is
    exactly zero.

    Args:
        irreps_in: ``C x (l_1 + l_2 + ...)``, each degree once, all with parity ``(-1)^l`` or all
            with ``-(-1)^l`` (e.g. ``64x0e+64x1o+64x2e+64x3o``).
        irreps_out: ``C x (L_1 + ...)`` with the same C, each degree once (e.g. ``64x0e+64x1o``).
            Order nu gives degree L the parity ``s^nu (-1)^L``, ``s = p_l (-1)^l`` of the input
            (so for ``0e+1o+2e+...`` inputs every output needs the parity ``(-1)^L``).
        correlation: highest power (MACE uses 3).
        num_elements: number of elements; every element has its own weights.

        backend: ``"torch"`` or ``"triton"``: the powers as a chain of Gaunt products on the
            grid kernel, ``f^nu = f^(nu-1) f`` read exactly at all degrees up to ``nu l_max``
            (:mod:`equinet.ops.kernels.gaunt_grid`); same weights, same result.

    Shapes: ``x: [n, irreps_in.dim]``, ``species: [n]`` (0..num_elements-1) → ``[n, irreps_out.dim]``.
    Weights: ``weight_in [num_elements, C, n_in]`` (start at 1) and
    ``weight_out [num_elements, C, correlation, n_out]`` (standard normal).
    """

    def __init__(self, irreps_in, irreps_out, correlation: int, num_elements: int, backend: str = "torch"):
        super().__init__()
        if backend not in MANY_BODY_BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(MANY_BODY_BACKENDS)}, got {backend!r}")
        self.backend = backend
        if backend == "triton":
            from .kernels import triton_gaunt_grid_product

            self._triton_product = triton_gaunt_grid_product()
        self.irreps_in = _as_irreps(irreps_in, "irreps_in")
        self.irreps_out = _as_irreps(irreps_out, "irreps_out")
        channels, self.degrees_in, sign = _spherical_function(self.irreps_in, "irreps_in", "64x0e+64x1o+64x2e")
        channels_out, self.degrees_out, _ = _spherical_function(self.irreps_out, "irreps_out", "64x0e+64x1o", one_sign=False)
        if channels_out != channels:
            raise ValueError(f"irreps_out '{self.irreps_out}' must have the multiplicity {channels} of irreps_in '{self.irreps_in}'")
        if not isinstance(correlation, int) or correlation < 1:
            raise ValueError(f"correlation must be a positive integer, got {correlation!r}")
        if not isinstance(num_elements, int) or num_elements < 1:
            raise ValueError(f"num_elements must be a positive integer, got {num_elements!r}")
        self.channels, self.correlation, self.num_elements = channels, correlation, num_elements
        mask = torch.zeros(correlation, len(self.degrees_out))
        reachable = set(self.degrees_in)
        for order in range(1, correlation + 1):
            if order > 1:
                reachable = _gaunt_reachable(reachable, self.degrees_in)
            for i, (_, ir) in enumerate(self.irreps_out):
                mask[order - 1, i] = float(ir.l in reachable and ir.p == sign**order * (-1) ** ir.l)
        for i, (_, ir) in enumerate(self.irreps_out):
            if not mask[:, i].any():
                raise ValueError(
                    f"no Gaunt product of up to {correlation} copies of '{self.irreps_in}' reaches {ir} "
                    f"(order nu gives degree L the parity {'' if sign > 0 else '(-1)^nu '}(-1)^L); "
                    "change irreps_out or raise the correlation or the degrees of irreps_in"
                )
        variances = _power_variances(self.degrees_in, self.degrees_out, correlation)
        # Unit mean square per order, and for the sum of the orders that reach a degree
        # (as e3nn normalizes a sum of paths), with standard-normal weights.
        scale = torch.where(mask > 0, 1 / (variances * mask.sum(0)).clamp(min=1e-300).sqrt(), 0.0)
        self.register_buffer("order_scale", scale.to(torch.get_default_dtype()), persistent=False)
        self.layout_in, self.layout_out = _Layout(self.irreps_in, self.degrees_in), _Layout(self.irreps_out, self.degrees_out)
        self.band_limit = correlation * max(self.degrees_in) + max(self.degrees_out)
        self.normalization = 1 / math.sqrt(self.layout_in.dim)
        self.weight_in = torch.nn.Parameter(torch.ones(num_elements, channels, len(self.degrees_in)))
        self.weight_out = torch.nn.Parameter(torch.randn(num_elements, channels, correlation, len(self.degrees_out)))

    def forward(self, x: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.irreps_in.dim:
            raise ValueError(f"x has {x.shape[-1]} features but irreps_in '{self.irreps_in}' has dim {self.irreps_in.dim}")
        weight_in = (self.weight_in * self.normalization)[:, :, self.layout_in.degree]  # [Z, C, D]
        a = self.layout_in.split(x) * weight_in.index_select(0, species)  # [n, C, D]
        projected = self._powers_on_kernel(a) if self.backend == "triton" else self._powers(a)  # [n, C, nu, D_out]
        weight_out = (self.weight_out * self.order_scale)[..., self.layout_out.degree]  # [Z, C, nu, D_out]
        out = (projected * weight_out.index_select(0, species)).sum(dim=2)
        return self.layout_out.merge(out)

    def _powers(self, a: torch.Tensor) -> torch.Tensor:
        """``(1/4pi) int f^nu Y`` ``[n, C, nu, D_out]`` of ``a [n, C, D_in]``, all powers on one grid."""
        even, odd = _to_grid(a, self.degrees_in, self.band_limit)  # [n, C, P/2]
        # Powers need the values themselves: north and south (or one, if f is mirror-even).
        values = even if odd is None else torch.stack([even + odd, even - odd])
        powers = [values]
        for _ in range(self.correlation - 1):
            powers.append(powers[-1] * values)
        powers = torch.stack(powers, dim=-2)  # [(2,) n, C, nu, P/2]
        halves = (powers, None) if odd is None else ((powers[0] + powers[1]) / 2, (powers[0] - powers[1]) / 2)
        return _from_grid(halves, self.degrees_out, self.band_limit)

    def _powers_on_kernel(self, a: torch.Tensor) -> torch.Tensor:
        """:meth:`_powers` as Gaunt products ``f^nu = f^(nu-1) f`` on the grid kernel: each power
        is read at all degrees up to ``nu l_max`` (exact: ``f^nu`` has no higher ones), the last
        one at the output degrees only."""

        def matrices(builder, *args):
            return _matrices(builder, *args, dtype=a.dtype, device=a.device)

        l_max, powers, power, degrees = max(self.degrees_in), [], a, self.degrees_in
        for order in range(1, self.correlation + 1):
            if order > 1:
                to = self.degrees_out if order == self.correlation else tuple(range(order * l_max + 1))
                band_limit = max(degrees) + l_max + max(to)
                (s1, _), (s2, _), (_, a3) = (matrices(_full_grid_transforms, d, band_limit) for d in (degrees, self.degrees_in, to))
                power, degrees = self._triton_product(power, a, s1, s2, a3), to
            powers.append(power @ matrices(_degree_selection, degrees, self.degrees_out)[0])
        return torch.stack(powers, dim=-2)

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in} -> {self.irreps_out}, correlation={self.correlation}, num_elements={self.num_elements}, "
            f"backend={self.backend!r}"
        )
