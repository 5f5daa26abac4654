"""The training configuration: one YAML file, validated before anything runs.

    data:      where the structures come from, label keys and units, splits, batch sizes,
               D3 to subtract from the labels (dispersion)
    model:     {name: <a registered model, e.g. mace>, <hyper-parameters>}; the cutoff is the model's;
               or {init_from: <a model.pt or mace-torch .model>, freeze: N, head: NAME, dtype: ...} to fine-tune one
    loss:      weights of energy per atom, forces, stress, dipole and polarizability, and of the second stage; mse or huber
    optimizer: adam | adamw, learning rate (by default the model family's), AMSGrad, weight decay
    scheduler: plateau | cosine | constant, with optional linear warm-up
    ema:       exponential moving average of the weights
    trainer:   epochs or wall time, accelerator, devices, nodes, strategy, clipping, seed
    output:    the run folder

Every mistake is a :class:`ConfigError` with one line naming the key, the value and
the fix (an unknown key also names the closest valid one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from equinet.dispersion import DEFAULT_CUTOFF
from equinet.potentials.closest import closest as _closest

__all__ = ["ConfigError", "TrainConfig", "load_config"]


class ConfigError(ValueError):
    """A mistake in the training configuration (one line)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerateConfig(_Section):
    name: Literal["emt-alloys", "xtb-molecules"] = "emt-alloys"
    n: int = Field(1000, ge=1)
    seed: int = 0


class DispersionConfig(_Section):
    """D3 subtracted from the labels (:mod:`equinet.dispersion`); the model file records it
    and the calculator adds it back."""

    damping: Literal["d3bj", "d3zero", "d3bjm", "d3zerom"] = "d3bj"
    functional: str = "pbe"
    cutoff: float = Field(DEFAULT_CUTOFF, gt=0)  # Å
    cn_cutoff: float = Field(DEFAULT_CUTOFF, gt=0)
    three_body: bool = False


class DataConfig(_Section):
    train: Path | None = None
    generate: GenerateConfig | None = None
    valid: Path | None = None
    test: Path | None = None
    # Fractions or counts of `train` (or the generated set) for train/valid/test; the
    # valid and test parts are ignored where a file is given for them.
    split: list[float] = Field(default_factory=lambda: [0.8, 0.1, 0.1], min_length=3, max_length=3)
    seed: int = 0
    energy_key: str | None = None
    forces_key: str | None = None
    stress_key: str | None = None
    dipole_key: str | None = None  # e·Å, 3 values
    polarizability_key: str | None = None  # Å³, 9 values
    energy_unit: str = "eV"
    # Per-element reference energies: None fits them to the training set by least
    # squares; a path reads a file of isolated atoms; a mapping gives {Z: eV}.
    atomic_energies: Path | dict[int, float] | None = None
    batch_size: int = Field(8, ge=1)
    valid_batch_size: int = Field(16, ge=1)
    num_workers: int = Field(0, ge=0)
    skip_bad: bool = False
    # D3 subtracted from the labels, so that the model learns the short-range rest.
    dispersion: DispersionConfig | None = None

    @model_validator(mode="after")
    def _valid_split(self):
        if any(value < 0 for value in self.split):
            raise ValueError(f"data.split {self.split}: sizes must be 0 or more")
        if any(value > 1 for value in self.split):
            if any(value != int(value) for value in self.split):
                raise ValueError(f"data.split {self.split}: give either fractions (all at most 1) or whole counts of structures")
        elif sum(self.split) > 1 + 1e-9:
            raise ValueError(f"data.split {self.split}: the fractions add up to more than 1")
        return self

    @model_validator(mode="after")
    def _one_source(self):
        if (self.train is None) == (self.generate is None):
            raise ValueError("give exactly one of data.train (a file) or data.generate (an embedded data set)")
        for key in ("train", "valid", "test"):
            path = getattr(self, key)
            if path is not None and not path.exists():
                raise ValueError(f"data.{key}: file not found: {path}")
        if isinstance(self.atomic_energies, Path) and not self.atomic_energies.exists():
            raise ValueError(f"data.atomic_energies: file not found: {self.atomic_energies}")
        return self


class StageTwoConfig(_Section):
    """The last part of training weighs the labels differently (MACE's second stage):
    forces are learned first, then a high energy weight and a low learning rate pin down
    the energy, which forces do not see up to a constant. Stage two starts at epoch
    ``start_epoch`` if given, else once ``start_fraction`` of ``trainer.max_epochs`` or of
    ``trainer.max_time_minutes`` (whichever ends training first) has passed. A weight or
    rate set to null keeps the first stage's. With ``refit_atomic_energies`` the per-element
    reference energies are first refitted by least squares to the energy errors on the
    training set (skipped when ``data.atomic_energies`` is given): stage one weighs energies
    lightly, so they drift by a constant that forces do not see, and removing it by
    gradient steps at the stage's high energy weight jolts the force-fitting weights."""

    start_epoch: int | None = Field(None, ge=1)
    start_fraction: float = Field(0.75, gt=0, lt=1)
    energy_weight: float | None = Field(1000.0, ge=0)
    forces_weight: float | None = Field(100.0, ge=0)
    stress_weight: float | None = Field(None, ge=0)
    dipole_weight: float | None = Field(None, ge=0)
    polarizability_weight: float | None = Field(None, ge=0)
    lr: float | None = Field(0.001, gt=0)
    refit_atomic_energies: bool = True


class LossConfig(_Section):
    energy_weight: float = Field(1.0, ge=0)  # on (energy per atom)^2, eV^2
    forces_weight: float = Field(1000.0, ge=0)  # on force components^2, (eV/Å)^2
    stress_weight: float = Field(0.0, ge=0)  # on stress components^2, (eV/Å^3)^2
    # The tensorial outputs (model.outputs), per structure: on dipole components^2, (e·Å)^2,
    # and on polarizability components^2, (Å^3)^2.
    dipole_weight: float = Field(100.0, ge=0)
    polarizability_weight: float = Field(1.0, ge=0)
    type: Literal["mse", "huber"] = "mse"
    huber_delta: float = Field(0.01, gt=0)
    stage_two: StageTwoConfig | None = StageTwoConfig()  # null: one stage

    def weights(self, stage_two: bool = False) -> dict[str, float]:
        """The weight of each label in the loss of the first stage or of stage two."""
        weights = {key: getattr(self, f"{key}_weight") for key in ("energy", "forces", "stress", "dipole", "polarizability")}
        if stage_two and self.stage_two is not None:
            weights.update({key: value for key in weights if (value := getattr(self.stage_two, f"{key}_weight")) is not None})
        return weights


class OptimizerConfig(_Section):
    name: Literal["adam", "adamw"] = "adam"
    lr: float | None = Field(None, gt=0)  # None: the model family's default_lr
    weight_decay: float = Field(0.0, ge=0)
    amsgrad: bool = True


class SchedulerConfig(_Section):
    name: Literal["plateau", "cosine", "constant"] = "plateau"
    warmup_epochs: int = Field(0, ge=0)
    factor: float = Field(0.8, gt=0, lt=1)  # plateau
    patience: int = Field(50, ge=0)  # plateau, in validation epochs
    min_lr: float = Field(0.0, ge=0)


class EMAConfig(_Section):
    enabled: bool = True
    decay: float = Field(0.99, gt=0, lt=1)


class TrainerConfig(_Section):
    max_epochs: int | None = Field(100, ge=1)
    max_time_minutes: float | None = Field(None, gt=0)
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    gradient_clip_val: float | None = Field(10.0, gt=0)  # null: no clipping
    seed: int = 0
    # N > 1: a committee of N models that differ only in the seed (equinet/training/ensemble.py)
    ensemble: int = Field(1, ge=1)
    check_val_every_n_epoch: int = Field(1, ge=1)
    log_every_n_steps: int = Field(10, ge=1)
    progress_bar: bool = True


class TrainConfig(_Section):
    data: DataConfig
    model: dict[str, Any]
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    ema: EMAConfig = EMAConfig()
    trainer: TrainerConfig = TrainerConfig()
    output: Path = Path("runs/equinet")

    @model_validator(mode="after")
    def _known_model(self):
        from equinet.potentials import MODELS
        from equinet.potentials.dtypes import DTYPES
        from equinet.potentials.registry import check_model_config

        finetune = {key: self.model[key] for key in ("init_from", "freeze", "head") if key in self.model}
        settings = {key: value for key, value in self.model.items() if key not in finetune}
        if "init_from" in finetune:
            if not Path(str(finetune["init_from"])).is_file():
                raise ValueError(f"model.init_from: file not found: {finetune['init_from']}")
            other = [key for key in settings if key != "dtype"]
            if other:
                raise ValueError(f"model.{other[0]}: the model comes from model.init_from, settings and all; remove model.{other[0]}")
            if settings.get("dtype", "float32") not in DTYPES:
                raise ValueError(f"model.dtype must be one of {', '.join(DTYPES)}, got {settings['dtype']!r}")
        else:
            for key, purpose in (("freeze", "keeps layers of a trained model fixed"), ("head", "picks a head of a trained model")):
                if key in finetune:
                    raise ValueError(f"model.{key} {purpose}: it needs model.init_from")
            settings = check_model_config(settings)
            if self.optimizer.lr is None:
                self.optimizer.lr = MODELS[settings["name"]].default_lr
        if not isinstance(finetune.get("head", ""), str):
            raise ValueError(f"model.head = {finetune['head']!r}: give the name of a head of the model file")
        freeze = finetune.get("freeze", 0)
        if not isinstance(freeze, int) or isinstance(freeze, bool) or freeze < 0:
            raise ValueError(f"model.freeze = {freeze!r}: give how many message-passing layers to keep fixed (0 or more)")
        self.model = {**settings, **finetune}
        return self


def _section_fields(loc: tuple) -> list[str]:
    """The valid keys at the place ``loc`` of the config."""
    model: type[BaseModel] = TrainConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def _one_line(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    loc = tuple(part for part in first["loc"] if not str(part).startswith("function-"))
    key = ".".join(str(part) for part in loc)
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key '{key}'{_closest(str(loc[-1]), _section_fields(loc))}"
    if first["type"] == "missing":
        return f"{source}: missing key '{key}'"
    message = first["msg"].removeprefix("Value error, ")
    if not key or message.startswith(f"{key}."):  # a section's own check names its key
        return f"{source}: {message}"
    return f"{source}: {key} = {first.get('input')!r}: {message}"


def _set(config: dict, assignment: str) -> None:
    """Apply one ``--set section.key=value`` (value parsed as YAML)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: write it as section.key=value, e.g. trainer.max_epochs=10")
    path, value = assignment.split("=", 1)
    *parents, last = path.strip().split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {assignment!r}: '{part}' is not a section")
    try:
        node[last] = yaml.safe_load(value)
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {assignment!r}: the value is not valid YAML ({getattr(error, 'problem', None) or 'see the YAML syntax'}); quote it or fix the brackets") from None


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Read, override (``["trainer.max_epochs=5", ...]``) and validate a training config.

    Relative paths are taken from the current directory, as on the command line.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; give the config's YAML file (e.g. examples/quickstart.yaml)")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; the config is a YAML file (e.g. examples/quickstart.yaml)") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping of sections (data, model, ...)")
    for assignment in overrides:
        _set(raw, assignment)
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_one_line(error, str(path))) from None
