"""Shared fixtures. Exactness tests run in float64 (see DESIGN.md: e3nn's Wigner-D
generators follow the default dtype)."""

import os

# Triton chooses between compiled kernels and its CPU interpreter when it is first imported
# (torch, e3nn and torch_geometric import it), so the kernel tests' TRITON_INTERPRET=1 is set
# here, before any test module is. TRITON_INTERPRET=0 in the environment keeps compiled
# kernels, for running tests/test_kernels.py on a GPU.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(previous)
