"""Models by name, built from plain config dicts (the YAML ``model:`` section).

    model = build_model({"name": "mace", "hidden_irreps": "64x0e+64x1o"}, statistics)
    same = build_model(model.config, model.statistics)   # what checkpoints store

``model.config`` holds every hyper-parameter with its default filled in, so a stored
model means the same thing after the defaults change.
"""

from __future__ import annotations

import inspect

from .accelerate import accelerate, backend_requests
from .base import Potential
from .closest import closest
from .dtypes import DTYPES, default_dtype

__all__ = ["MODELS", "build_model", "default_dtype", "register_model"]

MODELS: dict[str, type[Potential]] = {}


def register_model(name: str):
    """Class decorator: make a :class:`Potential` buildable as ``{"name": name, ...}``."""

    def register(cls: type[Potential]) -> type[Potential]:
        MODELS[name] = cls
        cls.model_name = name
        return cls

    return register


def hyperparameters(name: str) -> dict[str, inspect.Parameter]:
    """The config keys of model ``name`` (besides ``name`` and ``dtype``) and their defaults:
    its hyper-parameters, and a ``{role}_backend`` request per role of its operators (read
    when the model is built, not stored in it; see :mod:`.accelerate`)."""
    parameters = inspect.signature(MODELS[name].__init__).parameters
    requests = {
        f"{role}_backend": inspect.Parameter(f"{role}_backend", inspect.Parameter.KEYWORD_ONLY, default="torch", annotation=str)
        for role in MODELS[name].backend_families
    }
    return {**{key: p for key, p in parameters.items() if key not in ("self", "statistics")}, **requests}


def build_model(config: dict, statistics: dict) -> Potential:
    """Build the model that ``config`` names, set up from the data ``statistics``.

    Args:
        config: ``{"name": ..., "dtype": "float32" | "float64", <hyper-parameters>}``, and
            optionally ``{role}_backend`` keys: backends to run the model on
            (:func:`~equinet.potentials.accelerate.accelerate`), not stored in ``model.config``.
        statistics: :func:`equinet.datasets.compute_statistics` of the training set.

    Raises:
        ValueError: unknown model name, unknown key (naming the closest valid one) or
            bad value, in one line.
    """
    config = dict(config)
    name = config.pop("name", None)
    if name not in MODELS:
        known = ", ".join(sorted(MODELS))
        raise ValueError(f"model.name must be one of {known}, got {name!r}{closest(str(name), MODELS)}")
    dtype_name = config.pop("dtype", "float32")
    if dtype_name not in DTYPES:
        raise ValueError(f"model.dtype must be one of {', '.join(DTYPES)}, got {dtype_name!r}")
    valid = hyperparameters(name)
    for key in config:
        if key not in valid:
            raise ValueError(f"model.{key} is not a setting of model '{name}'{closest(key, [*valid, 'dtype'])}")
    config, requests = backend_requests(config, MODELS[name].backend_families)
    MODELS[name].check_backend_requests(config, requests)
    bound = inspect.signature(MODELS[name].__init__).bind(None, statistics, **config)
    bound.apply_defaults()
    resolved = {
        key: list(value) if isinstance(value, tuple) else value  # lists, as YAML writes them
        for key, value in bound.arguments.items()
        if key not in ("self", "statistics")
    }
    with default_dtype(DTYPES[dtype_name]):
        model = MODELS[name](statistics, **resolved)
    model.config = {"name": name, "dtype": dtype_name, **resolved}
    return accelerate(model, requests.get("conv"), requests.get("product"))
