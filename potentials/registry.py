"""Models by name, built from plain config dicts (the YAML ``model:`` section).

    model = build_model({"name": "mace", "hidden_irreps": "64x0e+64x1o"}, statistics)
    same = build_model(model.config, model.statistics)   # what checkpoints store

``model.config`` holds every hyper-parameter with its default filled in, so a stored
model means the same thing after the defaults change.
"""

from __future__ import annotations

import inspect
import typing

import pydantic
from e3nn import o3

from .accelerate import accelerate, backend_requests
from .base import Potential
from .closest import closest
from .dtypes import DTYPES, default_dtype

__all__ = ["MODELS", "build_model", "check_model_config", "default_dtype", "register_model"]

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


def _checked(name: str, key: str, value):
    """``value`` of hyper-parameter ``key`` of model ``name``, converted to the type that its
    constructor declares (``"3"`` to 3, say); one line naming the key if it cannot be, or if
    it is a negative count, a non-positive cutoff or a string that is not irreps."""
    annotation = typing.get_type_hints(MODELS[name].__init__).get(key)
    if annotation is None:  # a {role}_backend request, checked when the model is built
        return value
    try:
        value = pydantic.TypeAdapter(annotation).validate_python(value)
    except pydantic.ValidationError as error:
        raise ValueError(f"model.{key} = {value!r}: {error.errors()[0]['msg']}") from None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value < 0:
        raise ValueError(f"model.{key} = {value!r}: must be 0 or more")
    if key == "cutoff" and not value > 0:
        raise ValueError(f"model.cutoff = {value!r}: must be a positive distance in Å")
    if isinstance(value, (list, tuple)) and any(isinstance(item, (int, float)) and item < 1 for item in value):
        raise ValueError(f"model.{key} = {value!r}: every entry must be 1 or more")
    if key.endswith("irreps"):
        try:
            o3.Irreps(value)
        except (ValueError, AssertionError):
            raise ValueError(f"model.{key} = {value!r}: not irreps; write them as e.g. '64x0e+64x1o'") from None
    return value


def check_model_config(config: dict) -> dict:
    """The ``model:`` section ``config`` checked, its values converted to the types the
    model declares; keys it does not give stay absent (no defaults are filled in).

    Raises:
        ValueError: unknown model name, unknown key (naming the closest valid one) or bad
            value, in one line naming the key.
    """
    config = dict(config)
    name = config.pop("name", None)
    if name not in MODELS:
        known = ", ".join(sorted(MODELS))
        raise ValueError(f"model.name must be one of {known}, got {name!r}{closest(str(name), MODELS)}")
    checked = {"name": name}
    if "dtype" in config:
        checked["dtype"] = config.pop("dtype")
        if checked["dtype"] not in DTYPES:
            raise ValueError(f"model.dtype must be one of {', '.join(DTYPES)}, got {checked['dtype']!r}")
    valid = hyperparameters(name)
    for key, value in config.items():
        if key not in valid:
            raise ValueError(f"model.{key} is not a setting of model '{name}'{closest(key, [*valid, 'dtype'])}")
        checked[key] = _checked(name, key, value)
    return checked


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
    config = check_model_config(config)
    name, dtype_name = config.pop("name"), config.pop("dtype", "float32")
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
        try:
            model = MODELS[name](statistics, **resolved)
        except (ValueError, TypeError, RuntimeError, AssertionError, KeyError, IndexError) as error:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            if not message.startswith("model."):
                message = f"model: these settings do not build a '{name}' model ({message})"
            raise ValueError(message) from None
    model.config = {"name": name, "dtype": dtype_name, **resolved}
    return accelerate(model, requests.get("conv"), requests.get("product"))
