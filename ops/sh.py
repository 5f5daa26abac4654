"""Real spherical harmonics in e3nn's basis, for any degree.

Degrees up to 11 come from e3nn's generated polynomials (fast, exact). Higher degrees
continue e3nn's own construction by the recursion

    Y_l = (2l + 1) / sqrt(3 l) * C(l-1, 1, l) . (Y_{l-1} (x) Y_1)      (component normalization)

with C the e3nn Wigner-3j symbols, which keeps e3nn's sign and phase convention (the
recursion reproduces e3nn's polynomials for every l <= 11 to float64 precision) and
keeps Y_l a homogeneous polynomial of degree l, so it is smooth and differentiable
to any order.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3

_E3NN_MAX_L = 11
_NORMALIZATIONS = ("component", "norm", "integral")


def _normalization_factor(l: int, normalization: str) -> float:
    """Factor that turns a component-normalized Y_l into the requested normalization."""
    if normalization == "component":
        return 1.0
    if normalization == "norm":
        return 1.0 / math.sqrt(2 * l + 1)
    return 1.0 / math.sqrt(4 * math.pi)


def _check_arguments(l_max: int, normalization: str) -> None:
    if not isinstance(l_max, int) or l_max < 0:
        raise ValueError(f"l_max must be a non-negative integer, got {l_max!r}")
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")


def spherical_harmonics(
    l_max: int,
    vectors: torch.Tensor,
    normalize: bool = True,
    normalization: str = "component",
) -> torch.Tensor:
    """Spherical harmonics of all degrees 0..l_max, concatenated in e3nn's layout.

    Args:
        l_max: highest degree (any non-negative integer).
        vectors: ``[..., 3]`` Cartesian vectors (x, y, z).
        normalize: project the vectors onto the unit sphere first (else Y_l is the
            homogeneous polynomial ``|r|^l Y_l(r_hat)``).
        normalization: ``"component"`` (``|Y_l|^2 = 2l+1`` on the sphere, e3nn's
            default for features), ``"norm"`` (``|Y_l| = 1``) or ``"integral"``
            (orthonormal on the sphere).

    Returns:
        ``[..., (l_max + 1)^2]`` with irreps ``o3.Irreps.spherical_harmonics(l_max)``.

    Example:
        >>> spherical_harmonics(1, torch.tensor([[0.0, 0.0, 2.0]]))
        tensor([[1.0000, 0.0000, 0.0000, 1.7321]])
    """
    _check_arguments(l_max, normalization)
    if vectors.shape[-1] != 3:
        raise ValueError(f"vectors must have shape [..., 3], got {tuple(vectors.shape)}")
    if normalize:
        vectors = torch.nn.functional.normalize(vectors, dim=-1)

    low = list(range(min(l_max, _E3NN_MAX_L) + 1))
    sh = o3.spherical_harmonics(low, vectors, normalize=False, normalization="component")
    blocks = [sh]
    if l_max > _E3NN_MAX_L:
        y1 = sh[..., 1:4]
        previous = sh[..., _E3NN_MAX_L**2 :]
        for l in range(_E3NN_MAX_L + 1, l_max + 1):
            c = _recursion_matrix(l, vectors.dtype, vectors.device)
            previous = torch.einsum("ijk,...i,...j->...k", c, previous, y1)
            blocks.append(previous)
    out = torch.cat(blocks, dim=-1) if len(blocks) > 1 else blocks[0]
    if normalization != "component":
        factors = [_normalization_factor(l, normalization) for l in range(l_max + 1) for _ in range(2 * l + 1)]
        out = out * torch.tensor(factors, dtype=out.dtype, device=out.device)
    return out


_RECURSION_CACHE: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}


def _recursion_matrix(l: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(2l+1)/sqrt(3l) * C(l-1, 1, l)``, shape ``[2l-1, 3, 2l+1]``, computed once in float64."""
    key = (l, dtype, device)
    if key not in _RECURSION_CACHE:
        c = o3.wigner_3j(l - 1, 1, l, dtype=torch.float64) * (2 * l + 1) / math.sqrt(3 * l)
        _RECURSION_CACHE[key] = c.to(dtype=dtype, device=device)
    return _RECURSION_CACHE[key]


class SphericalHarmonics(torch.nn.Module):
    """Module form of :func:`spherical_harmonics`: ``[..., 3] -> [..., irreps_out.dim]``.

    Args:
        l_max: highest degree.
        normalize: project the vectors onto the unit sphere first.
        normalization: ``"component"``, ``"norm"`` or ``"integral"``.
    """

    def __init__(self, l_max: int, normalize: bool = True, normalization: str = "component"):
        super().__init__()
        _check_arguments(l_max, normalization)
        self.l_max = l_max
        self.normalize = normalize
        self.normalization = normalization
        self.irreps_out = o3.Irreps.spherical_harmonics(l_max)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return spherical_harmonics(self.l_max, vectors, self.normalize, self.normalization)

    def extra_repr(self) -> str:
        return f"l_max={self.l_max}, normalize={self.normalize}, normalization={self.normalization!r}"
