"""Shared fixtures. Exactness tests run in float64 (see DESIGN.md: e3nn's Wigner-D
generators follow the default dtype)."""

import pytest
import torch


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(previous)
