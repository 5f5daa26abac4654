"""Errors of a potential on a data set: predictions, the metrics table, parity plots.

Shared by ``equinet train`` (the test split) and ``equinet evaluate MODEL DATA``.
Errors are reported in meV/atom (energy), meV/Å (forces), meV/Å³ (stress), me·Å (dipole,
per structure) and mÅ³ (polarizability, per structure); labels a
structure lacks (NaN) are left out of the metrics, never counted as zero, and the table says
over how many structures each metric is taken. A non-finite prediction is an error: no
metric is ever computed over fewer values than it reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from equinet.potentials import Potential
from equinet.potentials.heads import TENSORIAL_OUTPUTS

__all__ = ["UNITS", "Pairs", "compute_metrics", "format_metrics", "paired_labels", "parity_plots", "predict"]

_QUANTITIES = {  # key: (label, unit of the errors)
    "energy": ("energy per atom", "meV/atom"),
    "forces": ("forces", "meV/Å"),
    "stress": ("stress", "meV/Å³"),
    "dipole": ("dipole", "me·Å"),
    "polarizability": ("polarizability", "mÅ³"),
}
# The unit of the values (the errors are in thousandths of it).
UNITS = {"energy": "eV/atom", "forces": "eV/Å", "stress": "eV/Å³", "dipole": "e·Å", "polarizability": "Å³"}


def paired_labels(out: dict[str, torch.Tensor], batch, stress: bool) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{label: (predicted, reference)}`` of a batch: energy per atom ``[B]`` (eV/atom),
    forces ``[n, 3]`` (eV/Å) and, with ``stress``, stress ``[B, 3, 3]`` (eV/Å³), for a model
    that predicts energies; dipole ``[B, 3]`` (e·Å) and polarizability ``[B, 3, 3]`` (Å³) for
    one that predicts those. The pairs the training loss, the validation metrics and the
    test metrics all compare."""
    pairs = {}
    if "energy" in out:
        num_atoms = torch.bincount(batch.batch, minlength=batch.num_graphs).to(out["energy"].dtype)
        pairs["energy"] = (out["energy"] / num_atoms, batch.energy.to(out["energy"].dtype) / num_atoms)
        pairs["forces"] = (out["forces"], batch.forces)
        if stress:
            pairs["stress"] = (out["stress"], batch.stress)
    for key in TENSORIAL_OUTPUTS:
        if key in out:
            pairs[key] = (out[key], batch[key])
    return pairs


class Pairs(NamedTuple):
    """Reference and predicted values of one quantity, where the reference exists."""

    reference: np.ndarray
    predicted: np.ndarray
    structures: int  # how many structures the values come from


def predict(model: Potential, dataset: Sequence[Data], batch_size: int = 16) -> dict[str, Pairs]:
    """Reference and predicted values over ``dataset``, by quantity: energies per atom
    (eV/atom), force components (eV/Å), stress components (eV/Å³), and the components of
    dipoles (e·Å) and polarizabilities (Å³) for a model that predicts them, only where the
    reference exists.

    Raises:
        ValueError: the model predicts a non-finite value where a reference exists.
    """
    model.eval()
    device = model.atomic_energies.device
    stress = any(torch.isfinite(graph.stress).all() for graph in dataset if "stress" in graph)
    pairs: dict[str, tuple[list, list]] = {key: ([], []) for key in _QUANTITIES}
    structures = dict.fromkeys(_QUANTITIES, 0)
    nonfinite = dict.fromkeys(_QUANTITIES, 0)
    first_nonfinite = {}
    done = 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        batch = batch.to(device)
        out = model(batch, forces=True, stress=stress, create_graph=False)
        structure = torch.arange(batch.num_graphs, device=device)
        per_structure = {"energy": structure, "forces": batch.batch, "stress": structure, "dipole": structure, "polarizability": structure}
        for key, (predicted, reference) in paired_labels(out, batch, stress).items():
            owner = per_structure[key].repeat_interleave(reference[0].numel())  # the structure of each value
            reference, predicted = reference.detach().reshape(-1), predicted.detach().reshape(-1).to(reference.dtype)
            keep = torch.isfinite(reference)
            bad = keep & ~torch.isfinite(predicted)
            if bad.any():
                nonfinite[key] += int(torch.unique(owner[bad]).numel())
                first_nonfinite.setdefault(key, done + int(owner[bad][0]))
            structures[key] += int(torch.unique(owner[keep]).numel())
            pairs[key][0].append(reference[keep].cpu().double().numpy())
            pairs[key][1].append(predicted[keep].cpu().double().numpy())
        done += batch.num_graphs
    for key, count in nonfinite.items():
        if count:
            raise ValueError(
                f"the model predicts non-finite {_QUANTITIES[key][0]} for {count} of {structures[key]} structures "
                f"(first: structure {first_nonfinite[key]}); no metrics are computed from such a model"
            )
    return {
        key: Pairs(np.concatenate(reference), np.concatenate(predicted), structures[key])
        for key, (reference, predicted) in pairs.items()
        if structures[key]
    }


def compute_metrics(predictions: dict[str, Pairs]) -> dict[str, dict[str, float]]:
    """``{key: {"mae", "rmse" (in meV units), "count" (values), "structures"}}`` for each
    quantity predicted."""
    metrics = {}
    for key, (reference, predicted, structures) in predictions.items():
        error = 1000.0 * (predicted - reference)
        metrics[key] = {
            "mae": float(np.abs(error).mean()),
            "rmse": float(np.sqrt((error**2).mean())),
            "count": int(error.size),
            "structures": structures,
        }
    return metrics


def format_metrics(metrics: dict[str, dict[str, float]], title: str) -> str:
    """The metrics as a small aligned table."""
    lines = [title, f"  {'quantity':<16}{'MAE':>12}{'RMSE':>12}  unit        {'values':>8}  structures"]
    for key, values in metrics.items():
        label, unit = _QUANTITIES[key]
        lines.append(f"  {label:<16}{values['mae']:12.3f}{values['rmse']:12.3f}  {unit:<12}{values['count']:>8}  {values['structures']}")
    return "\n".join(lines)


def parity_plots(predictions: dict[str, Pairs], folder: str | Path, title: str = "") -> list[Path]:
    """One PNG per quantity (``parity_energy.png``, ``parity_forces.png``, ...) in ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    metrics = compute_metrics(predictions)
    for key, (reference, predicted, _) in predictions.items():
        figure, axes = plt.subplots(figsize=(4.5, 4.5), layout="constrained")
        axes.scatter(reference, predicted, s=4, alpha=0.5, linewidths=0)
        low, high = float(min(reference.min(), predicted.min())), float(max(reference.max(), predicted.max()))
        axes.plot([low, high], [low, high], color="black", linewidth=0.8)
        axes.set_xlabel(f"reference {_QUANTITIES[key][0]} ({UNITS[key]})")
        axes.set_ylabel(f"predicted ({UNITS[key]})")
        axes.set_title(f"{title} MAE {metrics[key]['mae']:.2f}, RMSE {metrics[key]['rmse']:.2f} {_QUANTITIES[key][1]}".strip(), fontsize=9)
        path = folder / f"parity_{key}.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        paths.append(path)
    return paths
