"""How well a committee's spread tracks its error (``equinet evaluate committee.yaml DATA``).

The committee's mean is evaluated like one model (:class:`CommitteeMean` in
:func:`equinet.evaluation.predict`); beside the metrics, each structure with force labels
gives a spread (the mean over atoms of the per-atom norm of the force standard deviation,
as ``forces_std`` in the calculator) and an error (the RMSE of the mean forces). A useful
committee ranks structures by error as it ranks them by spread: the Spearman correlation
of the two is reported, with a calibration plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch_geometric.loader import DataLoader

from equinet.potentials import Potential

__all__ = ["CommitteeMean", "calibration_plot", "force_spread_and_error"]


class CommitteeMean(torch.nn.Module):
    """The mean energies, forces and stress of several models, as one model's outputs."""

    def __init__(self, members: Sequence[Potential]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        first = members[0]  # what the members share, as a Potential holds it
        self.atomic_energies, self.cutoff, self.elements, self.statistics = first.atomic_energies, first.cutoff, first.elements, first.statistics
        self.outputs = first.outputs

    def forward(self, batch, forces: bool = True, stress: bool = False, create_graph: bool | None = None) -> dict[str, torch.Tensor]:
        outs = [member(batch, forces=forces, stress=stress, create_graph=create_graph) for member in self.members]
        return {key: torch.stack([out[key] for out in outs]).mean(0) for key in outs[0]}


def force_spread_and_error(members: Sequence[Potential], dataset, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """``(spread, error)`` ``[S]`` in eV/Å for the ``S`` structures of ``dataset`` that have
    force labels: the mean per-atom norm of the members' force std, and the RMSE of their
    mean force against the label."""
    spreads, errors = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        batch = batch.to(members[0].atomic_energies.device)
        forces = torch.stack([member(batch, forces=True, create_graph=False)["forces"].detach() for member in members])
        per_atom_std = forces.var(0, unbiased=False).sum(-1).sqrt()  # [n]
        squared_error = ((forces.mean(0) - batch.forces.to(forces.dtype)) ** 2).sum(-1)  # [n], NaN without labels
        for structure in range(batch.num_graphs):
            atoms = batch.batch == structure
            if torch.isfinite(squared_error[atoms]).all():
                spreads.append(float(per_atom_std[atoms].mean()))
                errors.append(float((squared_error[atoms].mean() / 3).sqrt()))
    return np.array(spreads), np.array(errors)


def calibration_plot(spread: np.ndarray, error: np.ndarray, path: str | Path, rho: float) -> Path:
    """Error against spread per structure (log-log), with the line error = spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4.5, 4.5), layout="constrained")
    axes.scatter(spread, error, s=8, alpha=0.6, linewidths=0)
    positive = np.concatenate([spread[spread > 0], error[error > 0]])
    if positive.size:
        low, high = positive.min(), positive.max()
        axes.plot([low, high], [low, high], color="black", linewidth=0.8, label="error = spread")
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.legend(fontsize=8)
    axes.set_xlabel("committee force spread per structure (eV/Å)")
    axes.set_ylabel("force RMSE of the mean per structure (eV/Å)")
    axes.set_title(f"{len(spread)} structures, Spearman {rho:.2f}", fontsize=9)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)
