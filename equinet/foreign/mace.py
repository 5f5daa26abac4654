"""mace-torch model files (``.model``, ``torch.save(model)``) as equinet potentials.

    model = import_mace("MACE-model.model")                 # the file's dtype
    model = import_mace("MACE-model.model", dtype="float64")
    equinet.save_model(model, "model.pt")                    # an ordinary equinet model

The file is read without mace-torch and without running its pickle
(:mod:`.pickle_reader`); its hyper-parameters become an equinet ``mace`` config
(:mod:`.mace_config`) and its weights are mapped onto that model (:mod:`.mace_weights`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from equinet.potentials import Potential, build_model
from equinet.potentials.dtypes import DTYPES

from .mace_config import check_model_class, head_index, mace_config
from .mace_weights import mace_state_dict
from .pickle_reader import read_torch_pickle

__all__ = ["import_mace"]

def import_mace(path: str | Path, head: str | None = None, dtype: str | None = None) -> Potential:
    """The equinet ``mace`` model equal to the mace-torch model in ``path``, in eval mode.

    Args:
        path: a mace-torch ``.model`` file (``MACE`` or ``ScaleShiftMACE``).
        head: the head to import; ``None``: the model's only head, or the one named
            "Default" (as mace-torch's calculator picks).
        dtype: ``"float32"`` or ``"float64"``; ``None`` keeps the file's.

    Raises:
        FileNotFoundError: no such file.
        ValueError: in one line naming the file: not a torch file, damaged, a pickle that
            would run code, not a MACE model, an unknown head, or an option equinet does not
            reproduce (named).
    """
    path = Path(path)
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    record = read_torch_pickle(path)
    try:
        check_model_class(record)
        index = head_index(record, head)
        config, statistics = mace_config(record, index)
        stored = record.tensors()["node_embedding.linear.weight"].dtype
        config["dtype"] = dtype or ("float32" if stored == torch.float32 else "float64")
        model = build_model(config, statistics)
        model.load_state_dict({**model.state_dict(), **mace_state_dict(record, model, index)})
    except ValueError as error:  # UnsupportedMace, or settings that build_model refuses
        raise ValueError(f"{path}: cannot import this MACE model: {error}") from None
    except (AttributeError, KeyError, TypeError, IndexError, RuntimeError) as error:
        reason = ([line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__])[-1]
        raise ValueError(f"{path}: not a MACE model that equinet can read (laid out unlike mace-torch 0.3's: {reason})") from None
    if not model.isolated_energy_is_zero:
        _absorb_isolated_energies(model)
    return model.eval()


def _absorb_isolated_energies(model: Potential) -> None:
    """Move the learned energy of isolated atoms into the reference energies.

    mace-torch adds it to every atom's energy; equinet's base subtracts it (an isolated
    atom has exactly its reference energy), so the reference energies take it in and every
    energy stays the same.
    """
    with torch.no_grad():
        model.atomic_energies += model.scale * model.isolated_terms(torch.arange(model.num_elements))
    model.statistics["atomic_energies"] = dict(zip(model.elements, model.atomic_energies.tolist()))
