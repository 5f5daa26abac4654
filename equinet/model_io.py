"""The deployable model file (``model.pt``) and the record every equinet file carries:
weights plus everything needed to rebuild and trust them, as plain data that
``torch.load(..., weights_only=True)`` accepts.

``model.pt`` is ``{"format", "equinet_version", "conventions", "config", "statistics",
"state_dict"}``: the model config (name, dtype, every hyper-parameter), the data
statistics it was set up from, and the conventions (irreps layout, spherical-harmonic
normalization, CG phase source, units) of :data:`equinet.CONVENTIONS`. Training
checkpoints carry the same record, without the weights, under ``"equinet"``
(:func:`model_record`); every load, ``--resume`` included, checks it (:func:`check_record`).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from equinet.conventions import CONVENTIONS
from equinet.potentials import Potential, build_model

FORMAT = "equinet-model"
# Hyper-parameters added with a default other than the behaviour before them: the value that
# a model file written before they existed (its config lacks the key) was made with.
EARLIER_DEFAULTS = {"escn": {"nonlinearity": "gate"}}

__all__ = ["check_record", "load_model", "model_record", "model_to_dict", "read_plain_data", "save_model", "with_earlier_defaults"]


def with_earlier_defaults(config: dict) -> dict:
    """A saved model config with :data:`EARLIER_DEFAULTS` for the keys that its version lacked."""
    return {**EARLIER_DEFAULTS.get(config.get("name"), {}), **config}


def model_record(model: Potential) -> dict:
    """The record that ``model.pt`` and every training checkpoint carry (``"equinet"`` key
    there): format, equinet version, conventions, model config and data statistics."""
    from equinet import __version__

    return {
        "format": FORMAT,
        "equinet_version": __version__,
        "conventions": dict(CONVENTIONS),
        "config": model.config,
        "statistics": model.statistics,
    }


def check_record(record, path: Path) -> dict:
    """The model config of the record that ``path`` holds, with :data:`EARLIER_DEFAULTS`
    for the keys its version lacked, after checking the record.

    Raises:
        ValueError: in one line, if the record lacks a part or was made under other conventions.
    """
    missing = [key for key in ("conventions", "config", "statistics") if not isinstance(record, dict) or not isinstance(record.get(key), dict)]
    if missing:
        raise ValueError(f"{path}: a damaged equinet file: it lacks its {missing[0]}; write it again")
    different = {key: value for key, value in record["conventions"].items() if CONVENTIONS.get(key) != value}
    if different:
        version = record.get("equinet_version", record.get("version"))
        raise ValueError(f"{path}: made under other conventions than this equinet's ({different}); use the equinet version it names ({version})")
    return with_earlier_defaults(record["config"])


def model_to_dict(model: Potential) -> dict:
    """The model as plain data (see the module docstring)."""
    return {**model_record(model), "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()}}


def save_model(model: Potential, path: str | Path) -> None:
    """Write ``model`` to ``path`` (``model.pt``), whole or not at all."""
    from equinet.files import atomic_write

    with atomic_write(path) as partial:
        torch.save(model_to_dict(model), partial)


def read_plain_data(path: Path, what: str):
    """What ``torch.save`` wrote to ``path``, read with ``weights_only=True`` (tensors and
    plain Python data; nothing in the file is run).

    Raises:
        ValueError: in one line, if the file holds other Python objects or is no torch file.
    """
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: cannot read as {what} (not a file that torch.save wrote)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{path}: holds pickled Python objects, not {what}; equinet never loads pickled code") from None
    except Exception as error:
        raise ValueError(f"{path}: cannot read as {what} ({str(error).splitlines()[0]})") from None


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Potential:
    """Rebuild a model written by :func:`save_model`, in eval mode on ``device``.

    Raises:
        ValueError: not an equinet model file, or one made under other conventions.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found" if not path.exists() else f"{path}: is not a file; give a model.pt")
    data = read_plain_data(path, "an equinet model")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not an equinet model file (write one with `equinet train` or equinet.save_model)")
    config = check_record(data, path)
    if not isinstance(data.get("state_dict"), dict):
        raise ValueError(f"{path}: a damaged equinet file: it lacks its state_dict; write it again")
    try:
        model = build_model(config, data["statistics"])
        model.load_state_dict(data["state_dict"])
    except (ValueError, RuntimeError, KeyError, TypeError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        reason = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]  # past torch's header line
        raise ValueError(f"{path}: its weights do not fit the model its config describes ({reason}); the file is damaged") from None
    return model.to(device).eval()
