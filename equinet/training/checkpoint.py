"""Checkpoints that only ever hold finite weights."""

from __future__ import annotations

import lightning.pytorch as pl

__all__ = ["FiniteCheckpoint"]


class FiniteCheckpoint(pl.callbacks.ModelCheckpoint):
    """Lightning's checkpointing, except that nothing is saved once the module has stopped
    training for a non-finite loss, gradient or validation loss: ``last.ckpt`` and
    ``best.ckpt`` keep the last weights whose validation loss was finite."""

    def on_train_batch_end(self, trainer, pl_module, *args):
        if pl_module.nonfinite is None:
            super().on_train_batch_end(trainer, pl_module, *args)

    def on_train_epoch_end(self, trainer, pl_module):
        if pl_module.nonfinite is None:
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module):
        if pl_module.nonfinite is None:
            super().on_validation_end(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        if pl_module.nonfinite is None:
            super().on_train_end(trainer, pl_module)
