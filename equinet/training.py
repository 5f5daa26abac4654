"""Training on PyTorch Lightning: ``equinet train CONFIG.yaml`` calls :func:`train`.

The run folder gets ``config.yaml`` (resolved), ``metrics.csv`` (and TensorBoard logs
when tensorboard is installed), ``last.ckpt`` and ``best.ckpt`` (by validation loss),
``test.extxyz`` (the test split, when it was split off the training data), the test
metrics (``test_metrics.json`` and a printed table), parity plots and ``model.pt``: the
deployable model with the EMA weights.

Checkpoints hold only tensors and plain Python data (``torch.load(...,
weights_only=True)`` reads them) plus, under ``"equinet"``, the version, conventions,
model config and data statistics.
"""

from __future__ import annotations

import json
import warnings
from datetime import timedelta
from pathlib import Path

import lightning.pytorch as pl
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_only
import torch
import yaml
from torch.utils.data import DistributedSampler
from torch_geometric.loader import DataLoader
from torchmetrics import MeanAbsoluteError, MeanSquaredError, SumMetric

from equinet.config import ConfigError, StageTwoConfig, TrainConfig
from equinet.conventions import CONVENTIONS
from equinet.datasets import (
    build_graphs,
    check_elements,
    compute_statistics,
    graph_to_atoms,
    load_dataset,
    read_atomic_energies,
    split_dataset,
)
from equinet.evaluation import compute_metrics, format_metrics, parity_plots, predict
from equinet.metrics_csv import MetricsCSV
from equinet.model_io import read_plain_data, save_model, with_earlier_defaults
from equinet.run_folder import check_run_folder, clear_run, mark_run
from equinet.potentials import Potential, build_model
from equinet.potentials.registry import DTYPES

__all__ = ["PotentialModule", "StageTwo", "ema_with_warmup", "refit_atomic_energies", "train"]

_LABELS = ("energy", "forces", "stress")


def _masked_loss(predicted: torch.Tensor, reference: torch.Tensor, kind: str, delta: float) -> torch.Tensor:
    """Mean squared (or Huber) error over the finite entries of ``reference``; 0 if none."""
    keep = torch.isfinite(reference)
    if not keep.any():
        return predicted.sum() * 0.0
    if kind == "huber":
        return torch.nn.functional.huber_loss(predicted[keep], reference[keep], delta=delta)
    return torch.nn.functional.mse_loss(predicted[keep], reference[keep])


class PotentialModule(pl.LightningModule):
    """A :class:`~equinet.potentials.Potential` with its loss, optimizer and metrics."""

    def __init__(self, model: Potential, config: TrainConfig):
        super().__init__()
        self.model = model
        self.config = config
        self.save_hyperparameters({"config": config.model_dump(mode="json")})
        self.nonfinite: str | None = None  # what became non-finite, once training stopped for it
        self.in_stage_two = False  # set by the StageTwo callback
        self.use_stress = config.loss.weights(False)["stress"] > 0 or config.loss.weights(True)["stress"] > 0
        self.val_mae = torch.nn.ModuleDict({key: MeanAbsoluteError() for key in _LABELS})
        self.val_mse = torch.nn.ModuleDict({key: MeanSquaredError() for key in _LABELS})
        self.val_count = torch.nn.ModuleDict({key: SumMetric() for key in _LABELS})  # labelled values

    def _predict(self, batch):
        out = self.model(batch, forces=True, stress=self.use_stress, create_graph=self.training)
        num_atoms = torch.bincount(batch.batch, minlength=batch.num_graphs).to(out["energy"].dtype)
        pairs = {"energy": (out["energy"] / num_atoms, batch.energy / num_atoms), "forces": (out["forces"], batch.forces)}
        if self.use_stress:
            pairs["stress"] = (out["stress"], batch.stress)
        return pairs

    def _loss(self, pairs) -> torch.Tensor:
        loss_config = self.config.loss
        weights = loss_config.weights(self.in_stage_two)
        return sum(
            weights[key] * _masked_loss(predicted, reference, loss_config.type, loss_config.huber_delta)
            for key, (predicted, reference) in pairs.items()
        )

    def _stop(self, what: str) -> None:
        """Stop training because ``what`` became non-finite; :class:`FiniteCheckpoint` saves
        nothing from here on."""
        self.nonfinite = self.nonfinite or what
        self.trainer.should_stop = True

    def training_step(self, batch, batch_index):
        loss = self._loss(self._predict(batch))
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
            pairs = self._predict(batch)
        for key, (predicted, reference) in pairs.items():
            keep = torch.isfinite(reference)
            if keep.any():
                self.val_mae[key].update(predicted.detach()[keep], reference[keep])
                self.val_mse[key].update(predicted.detach()[keep], reference[keep])
                self.val_count[key].update(keep.sum())

    def on_validation_epoch_end(self):
        weights = self.config.loss.weights(self.in_stage_two)  # the training loss's
        loss = 0.0
        for key in ("energy", "forces", "stress") if self.use_stress else ("energy", "forces"):
            # compute() synchronises across processes, so every process calls it.
            mse, mae, count = self.val_mse[key].compute(), self.val_mae[key].compute(), self.val_count[key].compute()
            for metric in (self.val_mse[key], self.val_mae[key], self.val_count[key]):
                metric.reset()
            if count == 0:  # no structure of the validation set has this label
                continue
            self.log(f"val_{key}_mae_meV", 1000 * mae, prog_bar=key != "stress")
            self.log(f"val_{key}_rmse_meV", 1000 * mse.sqrt())
            loss = loss + weights[key] * mse
        if not torch.isfinite(torch.as_tensor(loss)):
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
        from equinet import __version__

        checkpoint["equinet"] = {
            "version": __version__,
            "conventions": dict(CONVENTIONS),
            "config": self.model.config,
            "statistics": self.model.statistics,
        }

    def on_load_checkpoint(self, checkpoint):
        # The statistics of a resumed run are the saved ones (stage two may have refitted
        # the reference energies), matching the atomic_energies buffer the checkpoint holds.
        self.model.statistics = checkpoint["equinet"]["statistics"]


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
                scheduler.best, scheduler.num_bad_epochs = scheduler.mode_worse, 0
            elif lr is not None and hasattr(scheduler, "base_lrs"):  # schedules go on from the new rate
                scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
        for checkpoint in trainer.checkpoint_callbacks:
            checkpoint.best_k_models, checkpoint.kth_best_model_path = {}, ""
            checkpoint.best_model_score, checkpoint.best_model_path = None, ""

    def state_dict(self):
        return {"started": self.started}

    def load_state_dict(self, state_dict):
        self.started = state_dict["started"]


def ema_with_warmup(decay: float):
    """The EMA update of ``torch.optim.swa_utils.AveragedModel`` with a warm-up, as in
    torch_ema and mace-torch: update t (t = 1, 2, ...) uses the decay
    ``min(decay, (1 + t) / (10 + t))``, so the early average follows the fast-changing
    weights instead of lagging about 1 / (1 - decay) steps behind them."""

    def average(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        step_decay = torch.clamp((1 + num_averaged) / (10 + num_averaged), max=decay).to(averaged.dtype)
        return averaged + (current - averaged) * (1 - step_decay)

    return average


# ---------------------------------------------------------------------------- data


def _sizes(split: list[float], has_valid: bool, has_test: bool) -> list[float | int]:
    """Train/valid/test sizes of the data to split; parts given as files take nothing."""
    counts = any(value > 1 for value in split)
    sizes = [int(v) for v in split] if counts else list(split)
    if has_valid:
        sizes[1] = 0
    if has_test:
        sizes[2] = 0
    if not counts and (has_valid or has_test):
        sizes[0] = 1.0 - sizes[1] - sizes[2]
    return sizes


def _load(config: TrainConfig, path, dtype, cutoff, required=("energy", "forces")):
    data = config.data
    keys = {"energy": data.energy_key, "forces": data.forces_key, "stress": data.stress_key}
    return load_dataset(path, cutoff, keys=keys, required=required, energy_unit=data.energy_unit, skip_bad=data.skip_bad, progress=True, dtype=dtype)


def prepare_data(config: TrainConfig, cutoff: float, dtype: torch.dtype) -> dict:
    """Train/valid/test graph sets from the config (file or embedded generator)."""
    data = config.data
    if data.generate is not None:
        from equinet.datasets.generate import GENERATORS
        from equinet.datasets.labels import read_labels

        frames = GENERATORS[data.generate.name](data.generate.n, seed=data.generate.seed)
        structures = [(atoms, read_labels(atoms, required=("energy", "forces"))) for atoms in frames]
        source = f"generated {data.generate.name}"
        everything = build_graphs(structures, cutoff, source, data.skip_bad, progress=True, dtype=dtype)
    else:
        everything = _load(config, data.train, dtype, cutoff)
    train_set, valid_set, test_set = split_dataset(everything, _sizes(data.split, data.valid is not None, data.test is not None), data.seed)
    sets = {"train": train_set, "valid": valid_set, "test": test_set, "test_split_off": data.test is None}
    if data.valid is not None:
        sets["valid"] = _load(config, data.valid, dtype, cutoff)
    if data.test is not None:
        sets["test"] = _load(config, data.test, dtype, cutoff)
    for name in ("train", "valid"):
        if len(sets[name]) == 0:
            raise ConfigError(f"data.split gives an empty {name} set ({len(everything)} structures, split {data.split})")
    return sets


def _loader(dataset, batch_size: int, config: TrainConfig, shuffle: bool, single_process: bool) -> DataLoader:
    workers = config.data.num_workers
    if shuffle and single_process:
        # The order of each epoch depends only on (seed, epoch): a resumed run sees the
        # same batches as an uninterrupted one. Lightning calls set_epoch on it; with
        # several processes it installs its own (equally seeded) DistributedSampler.
        sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=config.data.seed)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, persistent_workers=workers > 0)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, persistent_workers=workers > 0)


# ---------------------------------------------------------------------------- run


def _resumed_model(model_config: dict, checkpoint: Path) -> tuple[dict, dict, int]:
    """The model settings of a resumed run, the weight shapes its checkpoint holds and the
    checkpoint's global step. The settings are those the run began with (every one, as resolved
    then, with the earlier defaults for those its version lacked, so that a default changed
    since does not apply), overridden by those the config sets (a backend, say)."""
    try:
        data = read_plain_data(checkpoint, "a checkpoint of equinet train")
        saved = data["equinet"]["config"]
        shapes = {key.removeprefix("model."): tuple(value.shape) for key, value in data["state_dict"].items() if key.startswith("model.")}
        step = int(data["global_step"])
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"--resume: cannot read the model in {checkpoint} ({str(error).splitlines()[0]})") from None
    return {**with_earlier_defaults(saved), **model_config}, shapes, step


def _check_resumable(model: Potential, shapes: dict, checkpoint: Path) -> None:
    """One line, instead of the loader's traceback, when the config builds other weights."""
    own = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    if own != shapes:
        key = (sorted(own.keys() ^ shapes.keys()) or [k for k in own if own[k] != shapes[k]])[0]  # a missing weight first

        def shape(weights):
            return list(weights[key]) if key in weights else "absent"

        raise ConfigError(
            f"--resume: {checkpoint} holds a model that the config's model: settings do not build ({key}: "
            f"{shape(shapes)} there, {shape(own)} here); resume with the run's model settings or start a new run"
        )


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


def _inputs(config: TrainConfig, config_path: Path | None) -> list[Path]:
    """The files a run reads: its config and data."""
    data = config.data
    paths = [config_path, data.train, data.valid, data.test, data.atomic_energies]
    return [Path(path) for path in paths if isinstance(path, (str, Path))]


def _trainer(config: TrainConfig, output: Path, resume_step: int | None) -> pl.Trainer:
    """The Lightning trainer of a run, with its checkpoints, callbacks and loggers."""
    callbacks = [FiniteCheckpoint(dirpath=output, filename="best", monitor="val_loss", mode="min", save_last=True, enable_version_counter=False)]
    stage_two = config.loss.stage_two
    if stage_two is not None:
        callbacks.append(StageTwo(stage_two, refit=stage_two.refit_atomic_energies and config.data.atomic_energies is None))
    callbacks.append(pl.callbacks.LearningRateMonitor(logging_interval="epoch"))
    if config.ema.enabled:
        callbacks.append(pl.callbacks.WeightAveraging(use_buffers=False, avg_fn=ema_with_warmup(config.ema.decay)))
    loggers = [MetricsCSV(output, resume_step)]
    try:
        import tensorboard  # noqa: F401

        loggers.append(pl.loggers.TensorBoardLogger(output, name="tensorboard", version=""))
    except ImportError:
        pass
    settings = config.trainer
    try:
        return pl.Trainer(
            max_epochs=settings.max_epochs,
            max_time=timedelta(minutes=settings.max_time_minutes) if settings.max_time_minutes else None,
            accelerator=settings.accelerator,
            devices=settings.devices,
            num_nodes=settings.num_nodes,
            strategy=settings.strategy,
            gradient_clip_val=settings.gradient_clip_val,
            check_val_every_n_epoch=settings.check_val_every_n_epoch,
            log_every_n_steps=settings.log_every_n_steps,
            enable_progress_bar=settings.progress_bar,
            callbacks=callbacks,
            logger=loggers,
            default_root_dir=output,
            inference_mode=False,  # validation needs gradients for the forces
            num_sanity_val_steps=0,
            enable_model_summary=False,
        )
    except (MisconfigurationException, ValueError, TypeError, RuntimeError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"trainer: accelerator {settings.accelerator!r}, devices {settings.devices!r}, strategy {settings.strategy!r} "
            f"cannot run here ({message}); see 'trainer' in the README"
        ) from None


def train(config: TrainConfig, resume: bool = False, overwrite: bool = False, config_path: str | Path | None = None) -> int:
    """Train as ``config`` (read from ``config_path``) says; returns the exit code (1 if
    training stopped on a non-finite value).

    Everything is checked (config, output folder, trainer settings, data, model) before the
    earlier run in the output folder, if any, is replaced.
    """
    output = Path(config.output)
    if rank_zero_only.rank == 0:
        checkpoint = check_run_folder(output, _inputs(config, config_path and Path(config_path)), resume, overwrite)
    else:  # a DDP worker re-running the command: the launching process has checked
        checkpoint = output / "last.ckpt" if resume else None
    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)
    model_config, shapes, step = (config.model, None, None) if checkpoint is None else _resumed_model(config.model, checkpoint)
    dtype = DTYPES[model_config.get("dtype", "float32")]
    cutoff = float(model_config.get("cutoff", 5.0))

    sets = prepare_data(config, cutoff, dtype)
    atomic_energies = config.data.atomic_energies
    if isinstance(atomic_energies, Path):
        atomic_energies = read_atomic_energies(atomic_energies, energy_unit=config.data.energy_unit)
    statistics = compute_statistics(sets["train"], atomic_energies)
    for name in ("valid", "test"):
        check_elements(sets[name], statistics["elements"], source=f"{name} set")
    model = build_model(model_config, statistics)
    if checkpoint is not None:
        _check_resumable(model, shapes, checkpoint)
    module = PotentialModule(model, config)
    trainer = _trainer(config, output, step)

    # The run folder holds the config, logs and checkpoints together, by design: Lightning's
    # warnings that the folder is not empty (written config.yaml, or a resumed run) mislead.
    warnings.filterwarnings("ignore", message=r"(Experiment logs|Checkpoint) directory .* exists and is not empty")
    if trainer.is_global_zero:
        if checkpoint is None:
            kept = clear_run(output)
            if kept:
                rank_zero_info(f"--overwrite: replaced the earlier run in {output}; kept what equinet train did not write there: {', '.join(kept)}")
        mark_run(output)
        (output / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    single_process = config.trainer.num_nodes == 1 and config.trainer.devices in (1, "1")
    trainer.fit(
        module,
        train_dataloaders=_loader(sets["train"], config.data.batch_size, config, True, single_process),
        val_dataloaders=_loader(sets["valid"], config.data.valid_batch_size, config, False, single_process),
        ckpt_path=checkpoint,
    )
    if not trainer.is_global_zero:
        return 0
    return _finish(module, sets, output, config)


def _finish(module: PotentialModule, sets: dict, output: Path, config: TrainConfig) -> int:
    """Write model.pt (EMA weights), evaluate on the test set, print the summary. After a
    non-finite stop, model.pt holds the weights of best.ckpt, or is not written if none."""
    model = module.model.eval()
    lines = []
    if module.nonfinite is not None:
        best = output / "best.ckpt"
        lines.append(f"training stopped: {module.nonfinite} became non-finite (lower optimizer.lr or check the data)")
        if not best.is_file():
            lines.append("no epoch ended with a finite validation loss, so no checkpoint and no model.pt were written")
            print("\n".join(lines))
            return 1
        saved = torch.load(best, map_location="cpu", weights_only=True)
        model.load_state_dict({key.removeprefix("model."): value for key, value in saved["state_dict"].items() if key.startswith("model.")})
        model.statistics = saved["equinet"]["statistics"]
        lines.append(f"last.ckpt and best.ckpt hold the last weights with a finite validation loss; model.pt holds best.ckpt's (epoch {saved['epoch']})")
    save_model(model, output / "model.pt")
    lines.append(f"model.pt written to {output / 'model.pt'} ({sum(p.numel() for p in model.parameters()):,} parameters)")
    if len(sets["test"]):
        if sets["test_split_off"]:
            from ase.io import write

            write(output / "test.extxyz", [graph_to_atoms(graph) for graph in sets["test"]])
        predictions = predict(model, sets["test"], config.data.valid_batch_size)
        metrics = compute_metrics(predictions)
        (output / "test_metrics.json").write_text(json.dumps(metrics, indent=2))
        parity_plots(predictions, output, title="test")
        lines.append(format_metrics(metrics, f"test set ({len(sets['test'])} structures):"))
        lines.append(f"parity plots: {', '.join(str(output / f'parity_{key}.png') for key in predictions)}")
    print("\n".join(lines))
    return 1 if module.nonfinite is not None else 0
