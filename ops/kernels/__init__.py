"""The backends of equinet's operators (``equinet.ops.kernels``), in one registry.

``BACKENDS[family][backend]`` is a factory that builds a backend of one operator family from
the operator's plain description (irreps, paths, blocks, coefficient tables). Backend
``"torch"`` is the operator's own PyTorch code, the reference that every other backend must
match to float tolerance; its factory is :data:`REFERENCE` (``None``). This package is a
leaf: it imports torch, e3nn, triton and cuequivariance and the description modules of the
operators, never the operator modules.

=========================  ===================================  =======================================
family                     operator                             factory(description) → call
=========================  ===================================  =======================================
``cg``                     ``ChannelwiseTensorProduct``,        ``(irreps_in1, irreps_in2, irreps_out,
                           ``CGConvolution``                    instructions)`` → module ``(x1, x2,
                                                                weights, sender, receiver, num_receivers)``
``so2``                    ``SO2Convolution``                   ``(SO2Blocks)`` → module ``(node_feats,
                                                                wigner, edge_weights, edge_index,
                                                                num_receivers, summed_messages)``
``gaunt``                  ``GauntTensorProduct``               ``()`` → a product engine
                                                                (:mod:`equinet.ops.gaunt.product`)
``gaunt_many_body``        ``GauntManyBodyProduct``             ``(degrees_in, degrees_out,
                                                                correlation)`` → powers ``(a)``
``symmetric_contraction``  ``SymmetricContraction``             ``(ContractionBases)`` → module
                                                                ``(x, species, weights)``
=========================  ===================================  =======================================

Backends, one folder or file each: :mod:`.triton` (fused GPU kernels registered with
``torch.library``; on a CPU only in Triton's interpreter, ``TRITON_INTERPRET=1`` set before
Python starts), :mod:`.cpp` (fused CPU kernels, compiled on first use), :mod:`.cueq`
(cuEquivariance) and :mod:`.e3nn` (e3nn's ``TensorProduct``, the CG product's reference).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from typing import Callable

import torch
from torch import nn

__all__ = ["BACKENDS", "REFERENCE", "backend_names", "build", "choose_backend", "constants_only", "unavailable"]

# The factory of backend "torch": the operator runs its own code.
REFERENCE = None


def _require(module: str, backend: str, install: str) -> None:
    """An ImportError of one line naming the fix when ``module`` is not installed."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise ImportError(f"backend={backend!r} needs {install}") from None


_NEEDS = {
    "triton": ("triton", "the triton package: pip install triton (or pip install 'equinet[triton]')"),
    "cueq": ("cuequivariance_torch", "cuEquivariance: pip install 'equinet[cueq]' (or pip install cuequivariance-torch)"),
}


def _factory(backend: str, module: str, name: str) -> Callable:
    """The factory ``name(*description)`` of the backend module ``module`` (relative to this
    package), imported on first use: optional packages load only when a backend is built."""

    def factory(*description):
        if backend in _NEEDS:
            _require(_NEEDS[backend][0], backend, _NEEDS[backend][1])
        return getattr(importlib.import_module(module, __name__), name)(*description)

    return factory


BACKENDS: dict[str, dict[str, Callable | None]] = {
    "cg": {
        "torch": REFERENCE,
        "e3nn": _factory("e3nn", ".e3nn", "E3nnChannelwise"),
        "triton": _factory("triton", ".triton.cg_ops", "TritonChannelwise"),
        "cueq": _factory("cueq", ".cueq", "CueqChannelwise"),
    },
    "so2": {
        "torch": REFERENCE,
        "triton": _factory("triton", ".triton.so2", "TritonSO2"),
        "cpp": _factory("cpp", ".cpp.so2", "CppSO2"),
    },
    "gaunt": {
        "torch": REFERENCE,
        "triton": _factory("triton", ".triton.gaunt", "TritonGauntProduct"),
        "cpp": _factory("cpp", ".cpp.gaunt", "CppGauntEngine"),
    },
    "gaunt_many_body": {"torch": REFERENCE, "triton": _factory("triton", ".triton.gaunt", "TritonGauntPowers")},
    "symmetric_contraction": {"torch": REFERENCE, "cueq": _factory("cueq", ".cueq", "CueqSymmetricContraction")},
}


def backend_names(family: str) -> tuple[str, ...]:
    """The backends of ``family``, the reference ``"torch"`` first."""
    return tuple(BACKENDS[family])


def build(family: str, backend: str, *description):
    """The backend ``backend`` of ``family`` built from the operator's ``description``;
    ``None`` for the reference.

    Raises:
        ValueError: ``backend`` is not one of ``family``'s.
        ImportError: the package the backend needs is not installed (one line naming the fix).
    """
    if backend not in BACKENDS[family]:
        raise ValueError(f"backend must be one of {backend_names(family)}, got {backend!r}")
    factory = BACKENDS[family][backend]
    return None if factory is REFERENCE else factory(*description)


def unavailable(backend: str) -> str | None:
    """Why ``backend`` cannot run on this machine, in a few words; ``None`` if it can."""
    if backend == "triton":
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed"
        if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
            return "needs an NVIDIA GPU, or TRITON_INTERPRET=1 for testing"
    if backend == "cueq" and importlib.util.find_spec("cuequivariance_torch") is None:
        return "cuequivariance-torch is not installed"
    if backend == "cpp":
        if shutil.which("g++") is None and shutil.which("c++") is None:
            return "needs a C++ compiler (g++)"
        if shutil.which("ninja") is None and importlib.util.find_spec("ninja") is None:
            return "needs ninja (pip install ninja)"
    return None


def choose_backend(family: str, device: torch.device | str) -> str:
    """The backend that ``"auto"`` means for ``family`` on ``device``: the C++ kernels on a CPU
    that can build them, else the reference. The GPU kernels are chosen only by name until
    they have passed their tests on a GPU."""
    if torch.device(device).type == "cpu" and "cpp" in BACKENDS[family] and unavailable("cpp") is None:
        return "cpp"
    return "torch"


def constants_only(module: nn.Module) -> nn.Module:
    """``module`` without state in state dicts, in place: a backend holds only constants made
    from the operator's description, so that state dicts, and hence model files, are the same
    whatever backend runs the operator. Its tensors still move and cast with the model.

    ``module``'s own buffers are non-persistent; those of its submodules are left out by
    state-dict hooks, since a copy of a ``torch.fx.GraphModule`` (as in e3nn's and
    cuEquivariance's modules) registers its buffers again as persistent.
    """
    module.register_state_dict_post_hook(_leave_out)
    module.register_load_state_dict_pre_hook(_keep_own)
    return module


def _leave_out(module: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    """State-dict hook: drop the entries of ``module`` and its submodules."""
    for key in [key for key in state_dict if key.startswith(prefix)]:
        del state_dict[key]


def _keep_own(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Load hook: a loaded state dict holds nothing of ``module``, which keeps its own tensors."""
    for name, child in module.named_children():
        for key, tensor in child.state_dict(prefix=f"{prefix}{name}.", keep_vars=True).items():
            state_dict.setdefault(key, tensor)
