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

Files: :mod:`.coefficients` (Gaunt coefficients), :mod:`.matrices` (grid and torus conversion
matrices), :mod:`.layout` (the features' form and layout), :mod:`.transforms` (to the grid or
torus and back), :mod:`.product` (the autograd function over an engine), :mod:`.tensor_product`
and :mod:`.many_body` (the two modules).

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

from .coefficients import gaunt_coefficients
from .many_body import GauntManyBodyProduct
from .tensor_product import METHODS, GauntTensorProduct

__all__ = ["GauntManyBodyProduct", "GauntTensorProduct", "METHODS", "gaunt_coefficients"]
