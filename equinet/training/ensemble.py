"""Committees trained by one command: ``trainer.ensemble: N`` trains N members that differ
only in their seed (``trainer.seed``, +1, ...), one after another, each an ordinary run in
``OUTPUT/member_i``, and then writes ``OUTPUT/committee.yaml`` (:mod:`equinet.committee`).

To train the members in parallel instead, run ``equinet train`` once per member with
``--set trainer.seed=i --set output=OUTPUT/member_i`` (on separate machines or GPUs) and
write the committee file naming their ``model.pt`` files.
"""

from __future__ import annotations

from pathlib import Path

from equinet.committee import write_committee
from equinet.config import TrainConfig

from .run import run_inputs, train
from .run_folder import check_run_folder

__all__ = ["member_configs", "train_ensemble"]


def member_configs(config: TrainConfig) -> list[TrainConfig]:
    """The config of each member: the seed counted up from ``trainer.seed``, the output in
    ``OUTPUT/member_i``, one model each."""
    members = []
    for index in range(config.trainer.ensemble):
        trainer = config.trainer.model_copy(update={"seed": config.trainer.seed + index, "ensemble": 1})
        members.append(config.model_copy(update={"trainer": trainer, "output": Path(config.output) / f"member_{index}"}, deep=True))
    return members


def train_ensemble(config: TrainConfig, resume: bool = False, overwrite: bool = False, config_path: str | Path | None = None) -> int:
    """Train every member (all folders are checked before the first starts), then write the
    committee file; returns the exit code of the first member that failed, else 0."""
    members = member_configs(config)
    for member in members:
        check_run_folder(Path(member.output), run_inputs(member, config_path and Path(config_path)), resume, overwrite)
    for index, member in enumerate(members):
        print(f"committee member {index + 1} of {len(members)}: trainer.seed {member.trainer.seed}, output {member.output}", flush=True)
        code = train(member, resume=resume, overwrite=overwrite, config_path=config_path)
        if code != 0:
            return code
    committee = Path(config.output) / "committee.yaml"
    write_committee(committee, [Path(member.output) / "model.pt" for member in members])
    print(f"committee of {len(members)} written to {committee}: use it as a model in equinet.Calculator, equinet md, evaluate and select")
    return 0
