"""One run of ``equinet train``: check everything, replace the earlier run if asked, fit,
then write ``model.pt`` and the test metrics."""

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

from equinet.config import ConfigError, TrainConfig
from equinet.datasets import check_elements, compute_statistics, dataset_elements, graph_to_atoms, read_atomic_energies
from equinet.evaluation import compute_metrics, format_metrics, parity_plots, predict
from equinet.model_io import check_record, read_plain_data, save_model
from equinet.potentials import MODELS, Potential, build_model
from equinet.potentials.accelerate import backends_in_use
from equinet.potentials.dtypes import DTYPES

from .checkpoint import FiniteCheckpoint
from .data import loader, prepare_data, required_labels
from .ema import ema_callback
from .finetune import FINETUNE_KEYS, freeze_layers, load_pretrained, set_atomic_energies
from .metrics_csv import MetricsCSV
from .module import PotentialModule
from .run_folder import check_run_folder, clear_run, mark_run
from .stage_two import StageTwo, refit_atomic_energies

__all__ = ["train"]


def _resumed_model(model_config: dict, checkpoint: Path) -> tuple[dict, dict, int]:
    """The model settings of a resumed run, the weight shapes its checkpoint holds and the
    checkpoint's global step. The settings are those the run began with (every one, as resolved
    then, with the earlier defaults for those its version lacked, so that a default changed
    since does not apply), overridden by those the config sets (a backend, say)."""
    try:
        data = read_plain_data(checkpoint, "a checkpoint of equinet train")
        saved = check_record(data.get("equinet"), checkpoint)
        shapes = {key.removeprefix("model."): tuple(value.shape) for key, value in data["state_dict"].items() if key.startswith("model.")}
        step = int(data["global_step"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigError(f"--resume: {str(error).splitlines()[0]}") from None
    return {**saved, **model_config}, shapes, step


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


def _fitted_to_the_data(model: Potential, sets: dict, atomic_energies: dict | None, config: TrainConfig) -> Potential:
    """A pretrained ``model`` checked against the run's data, with its reference energies given
    by ``atomic_energies`` or fitted anew (least squares on its energy errors on the train set)."""
    for name in ("train", "valid", "test"):
        check_elements(sets[name], model.elements, source=f"{name} set (for the model of model.init_from)")
    if atomic_energies is not None:
        set_atomic_energies(model, atomic_energies)
    else:
        change = refit_atomic_energies(model, loader(sets["train"], config.data.valid_batch_size, config, False, True))
        changes = ", ".join(f"{z}: {1000 * value:+.1f}" for z, value in zip(model.elements, change.tolist()))
        rank_zero_info(f"model.init_from: reference energies fitted to the training set, changes (Z: meV) {changes}")
    return model


def run_inputs(config: TrainConfig, config_path: Path | None) -> list[Path]:
    """The files a run reads: its config, data and starting model."""
    data = config.data
    paths = [config_path, data.train, data.valid, data.test, data.atomic_energies, config.model.get("init_from")]
    return [Path(path) for path in paths if isinstance(path, (str, Path))]


def _trainer(config: TrainConfig, output: Path, resume_step: int | None, energy: bool = True) -> pl.Trainer:
    """The Lightning trainer of a run, with its checkpoints, callbacks and loggers (``energy``:
    the model predicts energies, whose reference energies stage two may refit)."""
    callbacks = [FiniteCheckpoint(dirpath=output, filename="best", monitor="val_loss", mode="min", save_last=True, enable_version_counter=False)]
    stage_two = config.loss.stage_two
    if stage_two is not None:
        callbacks.append(StageTwo(stage_two, refit=energy and stage_two.refit_atomic_energies and config.data.atomic_energies is None))
    callbacks.append(pl.callbacks.LearningRateMonitor(logging_interval="epoch"))
    if config.ema.enabled:
        callbacks.append(ema_callback(config.ema.decay))
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
        checkpoint = check_run_folder(output, run_inputs(config, config_path and Path(config_path)), resume, overwrite)
    else:  # a DDP worker re-running the command: the launching process has checked
        checkpoint = output / "last.ckpt" if resume else None
    pl.seed_everything(config.trainer.seed, workers=True, verbose=False)
    settings = {key: value for key, value in config.model.items() if key not in FINETUNE_KEYS}
    pretrained = None
    if checkpoint is not None:
        model_config, shapes, step = _resumed_model(settings, checkpoint)
        rank_zero_info(f"--resume: continuing from {checkpoint} at step {step}")
    elif "init_from" in config.model:
        pretrained = load_pretrained(config.model["init_from"], settings.get("dtype"), config.model.get("head"))
        frozen = freeze_layers(pretrained, config.model.get("freeze", 0))  # a wrong count fails before the data is read
        model_config, step = pretrained.config, None
    else:
        model_config, step = settings, None
    if config.optimizer.lr is None:
        config.optimizer.lr = MODELS[model_config["name"]].default_lr
    dtype = DTYPES[model_config.get("dtype", "float32")]
    cutoff = float(model_config.get("cutoff", 5.0))

    outputs = model_config.get("outputs", ["energy"])
    sets = prepare_data(config, cutoff, dtype, required_labels(config, outputs))
    atomic_energies = config.data.atomic_energies
    if isinstance(atomic_energies, Path):
        atomic_energies = read_atomic_energies(atomic_energies, energy_unit=config.data.energy_unit)
    if atomic_energies is None and "energy" not in outputs:  # no energies to fit them to, nor a use
        atomic_energies = dict.fromkeys(dataset_elements(sets["train"]), 0.0)
    if pretrained is not None:
        model = _fitted_to_the_data(pretrained, sets, atomic_energies, config)
    else:
        statistics = compute_statistics(sets["train"], atomic_energies)
        for name in ("valid", "test"):
            check_elements(sets[name], statistics["elements"], source=f"{name} set")
        model = build_model(model_config, statistics)
    _record_dispersion(model, config)
    if checkpoint is not None:
        _check_resumable(model, shapes, checkpoint)
    if pretrained is None:  # a resumed fine-tuning run keeps its layers fixed too
        frozen = freeze_layers(model, config.model.get("freeze", 0))
    if frozen:
        rank_zero_info(f"model.freeze: {len(frozen)} weight tensors kept fixed (the embedding and the first {config.model['freeze']} layers)")
    module = PotentialModule(model, config)
    trainer = _trainer(config, output, step, "energy" in outputs)

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
    rank_zero_info("backends: " + ", ".join(f"{family} {backend}" for family, backend in sorted(backends_in_use(model).items())))
    single_process = config.trainer.num_nodes == 1 and config.trainer.devices in (1, "1")
    trainer.fit(
        module,
        train_dataloaders=loader(sets["train"], config.data.batch_size, config, True, single_process),
        val_dataloaders=loader(sets["valid"], config.data.valid_batch_size, config, False, single_process),
        ckpt_path=checkpoint,
    )
    if not trainer.is_global_zero:
        return 0
    return _finish(module, sets, output, config)


def _record_dispersion(model, config: TrainConfig) -> None:
    """The D3 settings subtracted from the labels go into the model's statistics (and so
    into its files), where the calculator finds them and adds D3 back."""
    statistics = {key: value for key, value in model.statistics.items() if key != "dispersion"}
    if config.data.dispersion is not None:
        statistics["dispersion"] = config.data.dispersion.model_dump()
        rank_zero_info(
            f"data.dispersion: {config.data.dispersion.damping} ({config.data.dispersion.functional}) subtracted from the labels; "
            "the model learns the rest, and equinet.Calculator and equinet md add D3 back"
        )
    model.statistics = statistics


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
