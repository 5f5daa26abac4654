"""``equinet train CONFIG.yaml [--set key=value ...] [--resume | --overwrite]``."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands) -> None:
    parser = commands.add_parser("train", help="train a potential from a YAML config")
    parser.add_argument("config", type=Path, help="the training config (see examples/quickstart.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set trainer.max_epochs=5 (repeatable)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run in the output folder from its last.ckpt")
    group.add_argument("--overwrite", action="store_true", help="replace the earlier run in the output folder (only the files equinet train wrote there)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from equinet.config import load_config
    from equinet.training import train, train_ensemble

    config = load_config(args.config, args.overrides)
    run_training = train_ensemble if config.trainer.ensemble > 1 else train
    return run_training(config, resume=args.resume, overwrite=args.overwrite, config_path=args.config)
