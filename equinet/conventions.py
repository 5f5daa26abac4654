"""The conventions equinet's features, weights and outputs follow.

Stored with every checkpoint and deployed model, so that a model still means the same
thing after a library upgrade or a kernel swap (a model trained under one CG phase
convention must not be silently evaluated under another).
"""

from __future__ import annotations

CONVENTIONS: dict[str, str] = {
    "irreps_layout": "e3nn",  # [N, irreps.dim], each segment (mul, 2l+1), mul-major
    "spherical_harmonics": "e3nn-real-component",  # |Y_l|^2 = 2l+1 on the unit sphere
    "clebsch_gordan": "e3nn.o3.wigner_3j",  # real basis, sum C^2 = 1
    "tensor_product_normalization": "component/element",
    "units": "eV, Angstrom, eV/Angstrom, eV/Angstrom^3",
    "stress_sign": "ase",  # positive under tension
}
