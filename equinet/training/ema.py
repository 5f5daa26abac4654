"""The exponential moving average of the weights that ``model.pt`` holds."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

__all__ = ["ema_callback", "ema_with_warmup"]


def ema_with_warmup(decay: float):
    """The EMA update of ``torch.optim.swa_utils.AveragedModel`` with a warm-up, as in
    torch_ema and mace-torch: update t (t = 1, 2, ...) uses the decay
    ``min(decay, (1 + t) / (10 + t))``, so the early average follows the fast-changing
    weights instead of lagging about 1 / (1 - decay) steps behind them."""

    def average(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        step_decay = torch.clamp((1 + num_averaged) / (10 + num_averaged), max=decay).to(averaged.dtype)
        return averaged + (current - averaged) * (1 - step_decay)

    return average


def ema_callback(decay: float) -> pl.Callback:
    """Lightning's weight averaging with :func:`ema_with_warmup`: checkpoints and the final
    weights hold the average."""
    return pl.callbacks.WeightAveraging(use_buffers=False, avg_fn=ema_with_warmup(decay))
