"""Choosing the backends of a model's operators when it is run, not when it is built.

    model = equinet.load_model("model.pt")
    equinet.accelerate(model, conv="triton", product="cueq")   # in place, same weights

A model file holds weights and hyper-parameters only; like nequip's model modifiers and
fairchem's execution backends, :func:`accelerate` swaps the backend of every operator of a
role in place (the weights stay where they are, so a state dict moves between backends both
ways). Configs and model files written when backends were hyper-parameters
(``conv_backend``, ``product_backend``) still load: :func:`backend_requests` reads those keys
as a request for the run and drops them.
"""

from __future__ import annotations

import itertools

import torch

from equinet.ops.kernels import backend_names, choose_backend

from .dtypes import default_dtype

__all__ = ["ROLES", "accelerate", "backend_requests", "backends_in_use", "role_backends"]

# The operator families (equinet.ops.kernels.BACKENDS) of each role: "conv", the two-input
# tensor products and convolutions; "product", the many-body products.
ROLES = {"conv": ("cg", "so2", "gaunt"), "product": ("symmetric_contraction", "gaunt_many_body")}
_ROLE_OF = {family: role for role, families in ROLES.items() for family in families}


def role_backends(families) -> tuple[str, ...]:
    """The backends of any of ``families``, in registry order, without repeats."""
    return tuple(dict.fromkeys(name for family in families for name in backend_names(family)))


def accelerate(model: torch.nn.Module, conv: str | None = "auto", product: str | None = "auto") -> torch.nn.Module:
    """Run the operators of ``model`` on the given backends, in place; returns ``model``.

    Args:
        conv: backend of the convolutions and two-input tensor products (``"torch"``,
            ``"e3nn"``, ``"triton"``, ``"cueq"``, ``"cpp"``, as each family has them).
        product: backend of the many-body products (``"torch"``, ``"cueq"``, ``"triton"``).

    ``"auto"`` picks per operator the fastest backend that is exact on the device the model is
    on (:func:`equinet.ops.kernels.choose_backend`: the C++ kernels on a CPU with a compiler,
    else the PyTorch reference); ``None`` leaves the role as it is.

    Raises:
        ValueError: a backend that an operator of the role does not have (one line).
    """
    chosen = {"conv": conv, "product": product}
    operators = [m for m in model.modules() if _ROLE_OF.get(getattr(m, "family", None)) is not None]
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    dtype = torch.get_default_dtype() if first is None else first.dtype
    device = torch.device("cpu") if first is None else first.device
    with default_dtype(dtype):  # the backends' constants are built in the model's dtype
        for module in operators:
            backend = chosen[_ROLE_OF[module.family]]
            if backend == "auto":  # the Gaunt product's fft method has the reference only
                backend = choose_backend(module.family, device) if getattr(module, "method", "grid") == "grid" else "torch"
            if backend is not None and backend != module.backend:
                module.set_backend(backend)
                module.to(device)
    return model


def backends_in_use(model: torch.nn.Module) -> dict[str, str]:
    """``{operator family: backend}`` of the operators of ``model`` (for logs: what
    ``"auto"`` chose)."""
    return {module.family: module.backend for module in model.modules() if _ROLE_OF.get(getattr(module, "family", None)) is not None}


def backend_requests(config: dict, families: dict[str, tuple[str, ...]]) -> tuple[dict, dict[str, str]]:
    """``config`` without its ``{role}_backend`` keys, and those keys as ``{role: backend}``
    (``families``: the operator families of each role that the model has).

    Raises:
        ValueError: a backend that no family of the role has (one line naming the key).
    """
    config, requests = dict(config), {}
    for role, role_families in families.items():
        key = f"{role}_backend"
        if key in config:
            requests[role] = config.pop(key)
            names = role_backends(role_families)
            if requests[role] != "auto" and requests[role] not in names:
                raise ValueError(f"model.{key} must be one of {', '.join(names)}, got {requests[role]!r}")
    return config, requests
