"""Training on PyTorch Lightning: ``equinet train CONFIG.yaml`` calls :func:`train`.

The run folder gets ``config.yaml`` (resolved), ``metrics.csv`` (and TensorBoard logs
when tensorboard is installed), ``last.ckpt`` and ``best.ckpt`` (by validation loss),
``test.extxyz`` (the test split, when it was split off the training data), the test
metrics (``test_metrics.json`` and a printed table), parity plots and ``model.pt``: the
deployable model with the EMA weights. Checkpoints hold only tensors and plain Python data
plus, under ``"equinet"``, the record that ``model.pt`` carries too
(:func:`equinet.model_io.model_record`).

One module a concern, read in this order: ``run`` (one run, start to end), ``data`` (the
sets and loaders), ``module`` (a training step, validation, the optimizer), ``loss``,
``stage_two``, ``ema``, ``checkpoint``, ``metrics_csv``, ``run_folder`` and ``ensemble``
(committees: several runs and a committee file).
"""

from .ema import ema_with_warmup
from .ensemble import train_ensemble
from .module import PotentialModule
from .run import train
from .stage_two import StageTwo, refit_atomic_energies

__all__ = ["PotentialModule", "StageTwo", "ema_with_warmup", "refit_atomic_energies", "train", "train_ensemble"]
