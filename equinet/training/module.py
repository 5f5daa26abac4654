"""The LightningModule: one training step, the validation metrics, the optimizer and the
record that checkpoints carry."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError, SumMetric

from equinet.config import TrainConfig
from equinet.evaluation import paired_labels
from equinet.model_io import model_record
from equinet.potentials import Potential

from .loss import entry_losses, weighted_loss

__all__ = ["PotentialModule"]

_LABELS = ("energy", "forces", "stress", "dipole", "polarizability")
# How the validation errors are logged: val_{label}_mae_{suffix}, in thousandths of the unit.
_LOGGED_UNITS = {"energy": "meV", "forces": "meV", "stress": "meV", "dipole": "meA", "polarizability": "mA3"}


class PotentialModule(pl.LightningModule):
    """A :class:`~equinet.potentials.Potential` with its loss, optimizer and metrics.

    Training stops (``nonfinite`` says why) when the loss, the gradients or the validation
    loss stop being finite; :class:`~equinet.training.checkpoint.FiniteCheckpoint` then saves
    nothing more.
    """

    def __init__(self, model: Potential, config: TrainConfig):
        super().__init__()
        self.model = model
        self.config = config
        self.save_hyperparameters({"config": config.model_dump(mode="json")})
        self.nonfinite: str | None = None
        self.in_stage_two = False  # set by the StageTwo callback
        self.use_stress = config.loss.weights(False)["stress"] > 0 or config.loss.weights(True)["stress"] > 0
        energy = ("energy", "forces", *(("stress",) if self.use_stress else ())) if "energy" in model.outputs else ()
        self.labels = (*energy, *(key for key in model.outputs if key != "energy"))  # those validated
        self.val_loss = torch.nn.ModuleDict({key: MeanMetric() for key in _LABELS})  # mean entry loss
        self.val_mae = torch.nn.ModuleDict({key: MeanAbsoluteError() for key in _LABELS})
        self.val_mse = torch.nn.ModuleDict({key: MeanSquaredError() for key in _LABELS})
        self.val_count = torch.nn.ModuleDict({key: SumMetric() for key in _LABELS})  # labelled entries
        for metrics in (self.val_loss, self.val_mae, self.val_mse):
            for metric in metrics.values():
                metric.set_dtype(model.atomic_energies.dtype)  # sums in the model's precision

    def _pairs(self, batch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        out = self.model(batch, forces=True, stress=self.use_stress, create_graph=self.training)
        return paired_labels(out, batch, self.use_stress)

    def _stop(self, what: str) -> None:
        self.nonfinite = self.nonfinite or what
        self.trainer.should_stop = True

    def _loss(self, pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """The loss of one batch (a label no structure of the batch has adds 0)."""
        means = {}
        for key, (predicted, reference) in pairs.items():
            losses = entry_losses(predicted, reference, self.config.loss)
            means[key] = losses.mean() if losses.numel() else predicted.sum() * 0.0
        return weighted_loss(means, self.config.loss, self.in_stage_two)

    def training_step(self, batch, batch_index):
        loss = self._loss(self._pairs(batch))
        if not torch.isfinite(loss):
            self._stop(f"the training loss at step {self.global_step}")
            return None  # skips the optimizer step
        self.log("train_loss", loss, batch_size=batch.num_graphs, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def on_before_optimizer_step(self, optimizer):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads and not torch.stack([torch.isfinite(grad).all() for grad in grads]).all():  # one sync per step
            self._stop(f"the gradients at step {self.global_step}")
            optimizer.zero_grad(set_to_none=True)  # the optimizer skips weights without gradients

    def validation_step(self, batch, batch_index):
        with torch.enable_grad():  # forces are a gradient, even in validation
            pairs = self._pairs(batch)
        for key, (predicted, reference) in pairs.items():
            predicted = predicted.detach()
            keep = torch.isfinite(reference)
            if keep.any():
                self.val_loss[key].update(entry_losses(predicted, reference, self.config.loss))
                self.val_mae[key].update(predicted[keep], reference[keep])
                self.val_mse[key].update(predicted[keep], reference[keep])
                self.val_count[key].update(keep.sum())

    def on_validation_epoch_end(self):
        means = {}
        for key in self.labels:
            # compute() synchronises across processes, so every process calls it.
            metrics = (self.val_loss[key], self.val_mae[key], self.val_mse[key], self.val_count[key])
            loss, mae, mse, count = (metric.compute() for metric in metrics)
            for metric in metrics:
                metric.reset()
            if count == 0:  # no structure of the validation set has this label
                continue
            self.log(f"val_{key}_mae_{_LOGGED_UNITS[key]}", 1000 * mae, prog_bar=key != "stress")
            self.log(f"val_{key}_rmse_{_LOGGED_UNITS[key]}", 1000 * mse.sqrt())
            means[key] = loss
        loss = torch.as_tensor(weighted_loss(means, self.config.loss, self.in_stage_two))
        if not torch.isfinite(loss):
            self._stop(f"the validation loss at epoch {self.current_epoch}")
        self.log("val_loss", loss, prog_bar=True)

    def configure_optimizers(self):
        opt = self.config.optimizer
        cls = torch.optim.AdamW if opt.name == "adamw" else torch.optim.Adam
        optimizer = cls(self.model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay, amsgrad=opt.amsgrad)
        schedule = self.config.scheduler
        schedulers = []
        if schedule.warmup_epochs:
            warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: min(1.0, (epoch + 1) / (schedule.warmup_epochs + 1)))
            schedulers.append({"scheduler": warmup, "interval": "epoch"})
        if schedule.name == "plateau":
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=schedule.factor, patience=schedule.patience, min_lr=schedule.min_lr)
            schedulers.append({"scheduler": plateau, "monitor": "val_loss", "interval": "epoch", "frequency": self.config.trainer.check_val_every_n_epoch})
        elif schedule.name == "cosine":
            epochs = max(1, (self.config.trainer.max_epochs or 100) - schedule.warmup_epochs)
            schedulers.append({"scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs, eta_min=schedule.min_lr), "interval": "epoch"})
        return [optimizer], schedulers

    def on_save_checkpoint(self, checkpoint):
        checkpoint["equinet"] = model_record(self.model)

    def on_load_checkpoint(self, checkpoint):
        # The statistics of a resumed run are the saved ones (stage two may have refitted
        # the reference energies), matching the atomic_energies buffer the checkpoint holds.
        self.model.statistics = checkpoint["equinet"]["statistics"]
