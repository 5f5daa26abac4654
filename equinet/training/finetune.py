"""Starting a run from a trained model (``model: {init_from: FILE, freeze: N, head: NAME}``,
an equinet ``model.pt`` or a mace-torch ``.model`` file such as a MACE foundation model, of
which ``head`` picks one head of a multi-head file): its
architecture and weights, the per-element reference energies fitted anew to the new data
(unless ``data.atomic_energies`` gives them), and the first ``N`` message-passing layers
(with the species embedding) kept fixed."""

from __future__ import annotations

from pathlib import Path

import torch

from equinet.foreign.mace import import_mace
from equinet.model_io import load_model
from equinet.potentials import Potential
from equinet.potentials.dtypes import DTYPES

__all__ = ["FINETUNE_KEYS", "freeze_layers", "load_pretrained", "set_atomic_energies"]

FINETUNE_KEYS = ("init_from", "freeze", "head")


def load_pretrained(path: str | Path, dtype: str | None = None, head: str | None = None) -> Potential:
    """The trained model in ``path`` (an equinet ``model.pt`` or a mace-torch ``.model``
    file, of which ``head`` picks a head), in ``dtype`` if given."""
    if Path(path).suffix == ".model":
        return import_mace(path, head=head, dtype=dtype).train()
    if head is not None:
        raise ValueError(f"model.head picks a head of a mace-torch .model file; {path} is an equinet model with one head")
    model = load_model(path)
    if dtype is not None and dtype != model.config["dtype"]:
        model = model.to(DTYPES[dtype])
        model.config = {**model.config, "dtype": dtype}
    return model.train()


def set_atomic_energies(model: Potential, atomic_energies: dict[int, float]) -> None:
    """Give ``model`` the reference energies ``{Z: eV}`` (every element it has)."""
    missing = [z for z in model.elements if z not in atomic_energies]
    if missing:
        raise ValueError(f"data.atomic_energies lacks element Z={missing[0]}, which the model of model.init_from has")
    with torch.no_grad():
        model.atomic_energies.copy_(torch.tensor([float(atomic_energies[z]) for z in model.elements]))
    model.statistics = {**model.statistics, "atomic_energies": {z: float(atomic_energies[z]) for z in model.elements}}


def freeze_layers(model: Potential, layers: int) -> list[str]:
    """Fix (``requires_grad = False``) the species embedding and the first ``layers``
    message-passing layers: every entry ``i < layers`` of the model's per-layer module lists
    (those with one entry per message-passing step). Returns the frozen parameters' names."""
    steps = model.message_passing_steps
    if layers > steps:
        raise ValueError(f"model.freeze = {layers}: the model of model.init_from has only {steps} message-passing layers")
    per_layer = {name for name, module in model.named_children() if isinstance(module, torch.nn.ModuleList) and len(module) == steps}
    frozen = []
    for name, parameter in model.named_parameters():
        top, index, *_ = (*name.split("."), "")
        if layers and (top == "embedding" or (top in per_layer and index.isdigit() and int(index) < layers)):
            parameter.requires_grad_(False)
            frozen.append(name)
    return frozen
