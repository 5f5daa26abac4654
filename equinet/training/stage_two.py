"""The second stage of training (MACE's): other loss weights and learning rate for the last
part of a run, after a least-squares refit of the per-element reference energies."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.utilities.rank_zero import rank_zero_info
import torch

from equinet.config import StageTwoConfig
from equinet.potentials import Potential

__all__ = ["StageTwo", "refit_atomic_energies"]


@torch.no_grad()
def refit_atomic_energies(model: Potential, loader, reduce=lambda tensor: tensor) -> torch.Tensor:
    """Adds to ``model.atomic_energies`` the per-element change Δ [num_elements] (eV) that
    minimises the energy loss over ``loader``: least squares on per-atom energy errors,
    (counts · Δ − (E_ref − E_model)) / n_atoms, minimum-norm where compositions do not
    determine it (e.g. one molecule). ``reduce`` sums the normal equations over processes.
    Updates ``model.statistics`` to match and returns Δ."""
    dtype, device = model.atomic_energies.dtype, model.atomic_energies.device
    normal = torch.zeros(model.num_elements, model.num_elements, dtype=dtype, device=device)
    right = torch.zeros(model.num_elements, dtype=dtype, device=device)
    with torch.random.fork_rng(devices=[]):  # iterating a loader draws a seed: keep the run's stream
        for batch in loader:
            batch = batch.to(device)
            counts = torch.zeros(batch.num_graphs, model.num_elements, dtype=dtype, device=device)
            counts.index_add_(0, batch.batch, model.one_hot(model.species(batch.z)))
            per_atom_error = (batch.energy.to(dtype) - model(batch, forces=False)["energy"]) / counts.sum(1)
            keep = torch.isfinite(per_atom_error)
            rows = counts[keep] / counts[keep].sum(1, keepdim=True)
            normal += rows.T @ rows
            right += rows.T @ per_atom_error[keep]
    change = torch.linalg.pinv(reduce(normal)) @ reduce(right)
    model.atomic_energies += change
    model.statistics = {**model.statistics, "atomic_energies": dict(zip(model.elements, model.atomic_energies.tolist()))}
    return change


class StageTwo(pl.Callback):
    """Enters ``loss.stage_two`` at the start of the first epoch where it is due: refits
    the reference energies if asked (:func:`refit_atomic_energies`), switches the loss
    weights, sets the stage's learning rate (if given) and restarts the plateau scheduler
    and the choice of best.ckpt, since the validation loss now weighs the labels
    differently. Listed before Lightning's LearningRateMonitor, so that the logged rate is
    the one used; whether the stage has begun is saved in checkpoints."""

    def __init__(self, config: StageTwoConfig, refit: bool = False):
        self.config, self.refit, self.started = config, refit, False

    def _due(self, trainer) -> bool:
        if self.config.start_epoch is not None:
            return trainer.current_epoch >= self.config.start_epoch
        fraction = self.config.start_fraction
        if trainer.max_epochs is not None and trainer.max_epochs > 0 and trainer.current_epoch >= max(1, int(fraction * trainer.max_epochs)):
            return True
        timer = next((callback for callback in trainer.callbacks if isinstance(callback, pl.callbacks.Timer)), None)
        remaining = timer.time_remaining("train") if timer is not None else None
        if remaining is None:
            return False
        elapsed = timer.time_elapsed("train")
        return trainer.current_epoch > 0 and elapsed >= fraction * (elapsed + remaining)

    def on_train_epoch_start(self, trainer, pl_module):
        if not self.started and self._due(trainer):
            self.started = True
            if self.refit:
                self._refit(trainer, pl_module.model)
            self._restart(trainer)
            rank_zero_info(f"Stage two from epoch {trainer.current_epoch}: loss weights {pl_module.config.loss.weights(True)}, lr {self.config.lr}")
        pl_module.in_stage_two = self.started

    def _refit(self, trainer, model):
        change = refit_atomic_energies(model, trainer.train_dataloader, lambda tensor: trainer.strategy.reduce(tensor, reduce_op="sum"))
        changes = ", ".join(f"{z}: {1000 * value:+.1f}" for z, value in zip(model.elements, change.tolist()))
        rank_zero_info(f"Stage two: reference energies refitted to the training set, changes (Z: meV) {changes}")

    def _restart(self, trainer):
        lr = self.config.lr
        if lr is not None:
            for optimizer in trainer.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = lr
        for scheduler_config in trainer.lr_scheduler_configs:
            scheduler = scheduler_config.scheduler
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.load_state_dict({**scheduler.state_dict(), "best": scheduler.mode_worse, "num_bad_epochs": 0, "cooldown_counter": 0})
            elif lr is not None and hasattr(scheduler, "base_lrs"):  # schedules go on from the new rate
                scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
        for checkpoint in trainer.checkpoint_callbacks:
            worst = torch.tensor(torch.inf if checkpoint.mode == "min" else -torch.inf)
            forgotten = {"best_model_score": None, "best_model_path": "", "best_k_models": {}, "kth_best_model_path": "", "kth_value": worst}
            checkpoint.load_state_dict({**checkpoint.state_dict(), **forgotten})

    def state_dict(self):
        return {"started": self.started}

    def load_state_dict(self, state_dict):
        self.started = state_dict["started"]
