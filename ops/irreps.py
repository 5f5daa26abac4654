"""Checking the irreps that operators are built with."""

from __future__ import annotations

from e3nn import o3

__all__ = ["as_irreps"]


def as_irreps(irreps, name: str, example: str = "32x0e+16x1o") -> o3.Irreps:
    """``o3.Irreps(irreps)``, or a one-line ValueError naming the argument ``name`` and an ``example``."""
    try:
        return o3.Irreps(irreps)
    except (ValueError, AssertionError, TypeError) as error:
        raise ValueError(f"{name} must be e3nn irreps such as '{example}', got {irreps!r} ({error})") from None
