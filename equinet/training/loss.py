"""The training loss, the same for training steps and validation: a weighted sum over the
labels (energy per atom, forces, stress) of the mean squared or Huber error over the
entries that have a reference (NaN marks a label a structure lacks)."""

from __future__ import annotations

import torch

from equinet.config import LossConfig

__all__ = ["entry_losses", "weighted_loss"]


def entry_losses(predicted: torch.Tensor, reference: torch.Tensor, config: LossConfig) -> torch.Tensor:
    """The loss of each finite entry of ``reference``, flattened: ``[k]``."""
    keep = torch.isfinite(reference)
    predicted, reference = predicted[keep], reference[keep]
    if config.type == "huber":
        return torch.nn.functional.huber_loss(predicted, reference, delta=config.huber_delta, reduction="none")
    return torch.nn.functional.mse_loss(predicted, reference, reduction="none")


def weighted_loss(means: dict[str, torch.Tensor], config: LossConfig, stage_two: bool) -> torch.Tensor:
    """``sum_label weight(label) * mean loss(label)`` over the labels in ``means``."""
    weights = config.weights(stage_two)
    return sum(weights[key] * mean for key, mean in means.items())
