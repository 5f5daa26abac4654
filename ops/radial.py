"""Radial bases and smooth cutoff envelopes for edge lengths.

All modules map edge lengths ``r: [E]`` (Å) to ``[E, num_basis]`` (bases) or ``[E]``
(envelopes). The envelopes are 1 at r = 0, decrease monotonically, and reach zero at the
cutoff together with their first and second derivatives, so that energies, forces and
force derivatives (phonons, stress derivatives) are continuous when atoms cross the cutoff.
Beyond the cutoff they are exactly zero.
"""

from __future__ import annotations

import math

import torch


def _check_cutoff(cutoff: float) -> float:
    if not cutoff > 0:
        raise ValueError(f"cutoff must be a positive distance in Å, got {cutoff!r}")
    return float(cutoff)


def _check_num_basis(num_basis: int) -> int:
    if not isinstance(num_basis, int) or num_basis < 1:
        raise ValueError(f"num_basis must be a positive integer, got {num_basis!r}")
    return num_basis


class BesselBasis(torch.nn.Module):
    """Radial Bessel functions ``sqrt(2/r_c) sin(n pi r / r_c) / r`` for n = 1..num_basis.

    As in DimeNet and NequIP; the frequencies ``n pi / r_c`` are learnable when
    ``trainable=True``.

    Args:
        cutoff: r_c in Å.
        num_basis: number of functions.
        trainable: learn the frequencies.

    Shapes: ``r: [E]`` → ``[E, num_basis]``.
    """

    def __init__(self, cutoff: float, num_basis: int = 8, trainable: bool = False):
        super().__init__()
        self.cutoff = _check_cutoff(cutoff)
        self.num_basis = _check_num_basis(num_basis)
        frequencies = torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()) * math.pi / self.cutoff
        if trainable:
            self.frequencies = torch.nn.Parameter(frequencies)
        else:
            self.register_buffer("frequencies", frequencies)
        self.prefactor = math.sqrt(2.0 / self.cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1)
        # sin(w r) / r is finite at r = 0 (-> w); sinc keeps it so without a NaN.
        return self.prefactor * self.frequencies * torch.sinc(self.frequencies * r / math.pi)

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}, num_basis={self.num_basis}"


class GaussianBasis(torch.nn.Module):
    """Gaussians ``exp(-(r - mu_k)^2 / (2 sigma^2))`` with centres evenly spaced on [start, cutoff].

    The width defaults to the spacing of the centres (SchNet).

    Args:
        cutoff: last centre in Å.
        num_basis: number of Gaussians.
        start: first centre in Å.
        width: sigma in Å; ``None`` uses the centre spacing.
        trainable: learn centres and width.

    Shapes: ``r: [E]`` → ``[E, num_basis]``.
    """

    def __init__(
        self,
        cutoff: float,
        num_basis: int = 16,
        start: float = 0.0,
        width: float | None = None,
        trainable: bool = False,
    ):
        super().__init__()
        self.cutoff = _check_cutoff(cutoff)
        self.num_basis = _check_num_basis(num_basis)
        if not 0 <= start < self.cutoff:
            raise ValueError(f"start must lie in [0, cutoff={self.cutoff}), got {start!r}")
        centres = torch.linspace(start, self.cutoff, num_basis, dtype=torch.get_default_dtype())
        spacing = (self.cutoff - start) / max(num_basis - 1, 1)
        width = torch.tensor(spacing if width is None else width, dtype=torch.get_default_dtype())
        if not width > 0:
            raise ValueError(f"width must be positive, got {width.item()!r}")
        if trainable:
            self.centres = torch.nn.Parameter(centres)
            self.width = torch.nn.Parameter(width)
        else:
            self.register_buffer("centres", centres)
            self.register_buffer("width", width)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * ((r.unsqueeze(-1) - self.centres) / self.width) ** 2)

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}, num_basis={self.num_basis}"


class ExpNormalBasis(torch.nn.Module):
    """PhysNet's exponential-normal functions, TorchMD-Net's default (``expnorm``):

        e_k(r) = exp(-beta_k (exp(-alpha r) - mu_k)^2),   alpha = 5 / r_c,

    with ``mu_k`` evenly spaced on [exp(-r_c), 1] and ``beta_k = (2 (1 - exp(-r_c)) / K)^-2``
    (r_c in Å, as TorchMD-Net). Shapes: ``r: [E]`` (Å) → ``[E, num_basis]``.
    """

    def __init__(self, cutoff: float, num_basis: int = 32, trainable: bool = False):
        super().__init__()
        cutoff, num_basis = _check_cutoff(cutoff), _check_num_basis(num_basis)
        self.cutoff, self.num_basis = cutoff, num_basis
        dtype = torch.get_default_dtype()
        start = torch.exp(torch.tensor(-cutoff, dtype=dtype))
        means = torch.linspace(start.item(), 1.0, num_basis, dtype=dtype)
        betas = torch.full((num_basis,), (2.0 / num_basis * (1.0 - start.item())) ** -2, dtype=dtype)
        self.alpha = 5.0 / cutoff
        if trainable:
            self.means, self.betas = torch.nn.Parameter(means), torch.nn.Parameter(betas)
        else:
            self.register_buffer("means", means)
            self.register_buffer("betas", betas)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.betas * (torch.exp(-self.alpha * r.unsqueeze(-1)) - self.means) ** 2)

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}, num_basis={self.num_basis}"


def polynomial_envelope(x: torch.Tensor, p: int) -> torch.Tensor:
    """:class:`PolynomialCutoff` of ``x = r / r_c`` (any shape), for cutoffs that differ
    from edge to edge (MACE's ZBL repulsion ends at the sum of the two covalent radii)."""
    f = 1.0 - 0.5 * (p + 1) * (p + 2) * x.pow(p) + p * (p + 2) * x.pow(p + 1) - 0.5 * p * (p + 1) * x.pow(p + 2)
    return torch.where(x < 1.0, f, torch.zeros_like(f))


class PolynomialCutoff(torch.nn.Module):
    """Polynomial envelope of Klicpera et al. (DimeNet), as used by NequIP and MACE.

    With x = r / r_c:
    ``f(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)`` for x < 1, else 0.
    f, f' and f'' vanish at x = 1 for every p >= 2.

    Shapes: ``r: [E]`` → ``[E]``.
    """

    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        self.cutoff = _check_cutoff(cutoff)
        if not isinstance(p, int) or p < 2:
            raise ValueError(f"p must be an integer >= 2 (smoothness of the envelope), got {p!r}")
        self.p = p

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return polynomial_envelope(r / self.cutoff, self.p)

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}, p={self.p}"


class CosineCutoff(torch.nn.Module):
    """Squared cosine envelope ``f(r) = [(1 + cos(pi r / r_c)) / 2]^2`` for r < r_c, else 0.

    Behler's plain cosine cutoff ``(1 + cos(pi r / r_c)) / 2`` has a second derivative
    that jumps at r_c (force constants jump as atoms cross the cutoff); squaring it makes
    f, f' and f'' all vanish there while keeping its shape.

    Shapes: ``r: [E]`` → ``[E]``.
    """

    def __init__(self, cutoff: float):
        super().__init__()
        self.cutoff = _check_cutoff(cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        f = (0.5 * (1.0 + torch.cos(math.pi * r / self.cutoff))) ** 2
        return torch.where(r < self.cutoff, f, torch.zeros_like(f))

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}"
