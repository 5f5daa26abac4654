"""``equinet info``: versions, conventions and the operator backends available here."""

from __future__ import annotations

import argparse
import platform


def register(commands) -> None:
    parser = commands.add_parser("info", help="versions, conventions and available backends")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import e3nn
    import torch

    import equinet
    from equinet.ops import BACKENDS

    print(f"equinet {equinet.__version__}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, e3nn {e3nn.__version__}")
    print(f"cuda available: {torch.cuda.is_available()}")
    print(f"tensor-product backends: {', '.join(BACKENDS)}")
    print("conventions:")
    for key, value in equinet.CONVENTIONS.items():
        print(f"  {key}: {value}")
    return 0
