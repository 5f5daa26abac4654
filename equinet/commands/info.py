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
    from equinet.ops.kernels import BACKENDS, unavailable

    print(f"equinet {equinet.__version__}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, e3nn {e3nn.__version__}")
    print(f"cuda available: {torch.cuda.is_available()}")
    print("operator backends (family: backend, or backend (why it cannot run here)):")
    for family, backends in BACKENDS.items():
        described = [name if unavailable(name) is None else f"{name} ({unavailable(name)})" for name in backends]
        print(f"  {family}: {', '.join(described)}")
    print("conventions:")
    for key, value in equinet.CONVENTIONS.items():
        print(f"  {key}: {value}")
    return 0
