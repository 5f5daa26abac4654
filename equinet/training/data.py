"""The data of a run: the train/valid/test sets of the config and their loaders."""

from __future__ import annotations

import torch
from torch.utils.data import DistributedSampler
from torch_geometric.loader import DataLoader

from equinet.config import ConfigError, TrainConfig
from equinet.datasets import build_graphs, load_dataset, split_dataset
from equinet.dispersion import D3Dispersion, subtract_from_labels

__all__ = ["loader", "prepare_data", "required_labels"]


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


def required_labels(config: TrainConfig, outputs) -> tuple[str, ...]:
    """The labels every training frame must have for a model with ``outputs``: energy and
    forces for an energy model, and each tensorial output that the loss weighs."""
    weights = config.loss.weights(False)
    tensorial = tuple(key for key in outputs if key != "energy" and weights[key] > 0)
    return (("energy", "forces") if "energy" in outputs else ()) + tensorial


def _load(config: TrainConfig, path, dtype, cutoff, required):
    data = config.data
    keys = {key: getattr(data, f"{key}_key") for key in ("energy", "forces", "stress", "dipole", "polarizability")}
    return load_dataset(path, cutoff, keys=keys, required=required, energy_unit=data.energy_unit, skip_bad=data.skip_bad, progress=True, dtype=dtype)


def prepare_data(config: TrainConfig, cutoff: float, dtype: torch.dtype, required: tuple[str, ...] = ("energy", "forces")) -> dict:
    """Train/valid/test graph sets from the config (file or embedded generator), with D3
    subtracted from their labels if ``data.dispersion`` asks; every frame has the
    ``required`` labels (:func:`required_labels`)."""
    data = config.data
    if data.generate is not None:
        from equinet.datasets.generate import GENERATORS
        from equinet.datasets.labels import read_labels

        frames = GENERATORS[data.generate.name](data.generate.n, seed=data.generate.seed)
        source = f"generated {data.generate.name}"
        structures = [(atoms, read_labels(atoms, required=required, source=source, frame=frame)) for frame, atoms in enumerate(frames)]
        everything = build_graphs(structures, cutoff, source, data.skip_bad, progress=True, dtype=dtype)
    else:
        everything = _load(config, data.train, dtype, cutoff, required)
    dispersion = None if data.dispersion is None else D3Dispersion(**data.dispersion.model_dump())
    if dispersion is not None:
        subtract_from_labels(everything, dispersion)
    train_set, valid_set, test_set = split_dataset(everything, _sizes(data.split, data.valid is not None, data.test is not None), data.seed)
    sets = {"train": train_set, "valid": valid_set, "test": test_set, "test_split_off": data.test is None}
    for name in ("valid", "test"):
        if getattr(data, name) is not None:
            sets[name] = _load(config, getattr(data, name), dtype, cutoff, required)
            if dispersion is not None:
                subtract_from_labels(sets[name], dispersion)
    for name in ("train", "valid"):
        if len(sets[name]) == 0:
            raise ConfigError(f"data.split gives an empty {name} set ({len(everything)} structures, split {data.split})")
    return sets


def loader(dataset, batch_size: int, config: TrainConfig, shuffle: bool, single_process: bool) -> DataLoader:
    workers = config.data.num_workers
    if shuffle and single_process:
        # The order of each epoch depends only on (seed, epoch): a resumed run sees the
        # same batches as an uninterrupted one. Lightning calls set_epoch on it; with
        # several processes it installs its own (equally seeded) DistributedSampler.
        sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=config.data.seed)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, persistent_workers=workers > 0)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, persistent_workers=workers > 0)
