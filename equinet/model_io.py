"""The deployable model file (``model.pt``): weights plus everything needed to rebuild
and trust them, as plain data that ``torch.load(..., weights_only=True)`` accepts.

``{"format", "equinet_version", "conventions", "config", "statistics", "state_dict"}``:
the model config (name, dtype, every hyper-parameter), the data statistics it was set up
from, and the conventions (irreps layout, spherical-harmonic normalization, CG phase
source, units) of :data:`equinet.CONVENTIONS`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from equinet.conventions import CONVENTIONS
from equinet.potentials import Potential, build_model

FORMAT = "equinet-model"
# Hyper-parameters added with a default other than the behaviour before them: the value that
# a model file written before they existed (its config lacks the key) was made with.
EARLIER_DEFAULTS = {"escn": {"nonlinearity": "gate"}}

__all__ = ["load_model", "model_to_dict", "save_model", "with_earlier_defaults"]


def with_earlier_defaults(config: dict) -> dict:
    """A saved model config with :data:`EARLIER_DEFAULTS` for the keys that its version lacked."""
    return {**EARLIER_DEFAULTS.get(config.get("name"), {}), **config}


def model_to_dict(model: Potential) -> dict:
    """The model as plain data (see the module docstring)."""
    from equinet import __version__

    return {
        "format": FORMAT,
        "equinet_version": __version__,
        "conventions": dict(CONVENTIONS),
        "config": model.config,
        "statistics": model.statistics,
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
    }


def save_model(model: Potential, path: str | Path) -> None:
    """Write ``model`` to ``path`` (``model.pt``)."""
    torch.save(model_to_dict(model), path)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Potential:
    """Rebuild a model written by :func:`save_model`, in eval mode on ``device``.

    Raises:
        ValueError: not an equinet model file, or one made under other conventions.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: cannot read as an equinet model ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not an equinet model file (write one with `equinet train` or equinet.save_model)")
    different = {key: value for key, value in data["conventions"].items() if CONVENTIONS.get(key) != value}
    if different:
        raise ValueError(f"{path}: made under other conventions than this equinet's ({different}); use the equinet version it names ({data['equinet_version']})")
    model = build_model(with_earlier_defaults(data["config"]), data["statistics"])
    model.load_state_dict(data["state_dict"])
    return model.to(device).eval()
