"""The floating-point types a model runs in, by the names configs and model files use."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["DTYPES", "default_dtype"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Run a block with torch's default dtype set to ``dtype``.

    Models are built directly in their dtype (CG coefficients made in float32 and cast up
    would carry float32 errors into a float64 model), and e3nn builds Wigner-D generators
    in the default dtype (float32 caps their accuracy at ~1e-6 even for float64 inputs).
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
