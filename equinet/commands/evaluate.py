"""``equinet evaluate MODEL DATA``: the metrics table and parity plots of a model on any data file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from equinet.commands import positive_int


def register(commands) -> None:
    parser = commands.add_parser("evaluate", help="errors of a trained model on a data file, with parity plots")
    parser.add_argument("model", type=Path, help="a deployed model (model.pt)")
    parser.add_argument("data", type=Path, help="any ASE-readable file, rMD17 .npz or equinet .h5")
    parser.add_argument("--output", type=Path, default=None, help="folder for plots and metrics (default: next to the model)")
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--device", default="cpu")
    for label in ("energy", "forces", "stress"):
        parser.add_argument(f"--{label}-key", default=None, help=f"key of the {label} label in the data")
    parser.add_argument("--energy-unit", default="eV", help="unit of the data's energies, e.g. kcal/mol (default eV)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from equinet.calculator import check_device
    from equinet.datasets import check_elements, load_dataset
    from equinet.evaluation import compute_metrics, format_metrics, parity_plots, predict
    from equinet.files import UsageError
    from equinet.model_io import load_model

    output = args.output or args.model.parent / f"evaluate_{args.data.stem}"
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output}: is a file; give a folder for the metrics and plots")
    model = load_model(args.model, check_device(args.device))
    keys = {"energy": args.energy_key, "forces": args.forces_key, "stress": args.stress_key}
    dtype = model.atomic_energies.dtype
    dataset = load_dataset(args.data, model.cutoff, keys=keys, required=("energy",), energy_unit=args.energy_unit, dtype=dtype)
    check_elements(dataset, model.elements, source=str(args.data))
    recorded = model.statistics.get("dispersion")
    if recorded is not None:  # compare like with like: the model learned the labels without D3
        from equinet.dispersion import D3Dispersion, subtract_from_labels

        dispersion = D3Dispersion(**recorded)
        subtract_from_labels(dataset, dispersion)
        print(f"{dispersion} subtracted from the labels, as in the model's training (data.dispersion)")
    try:
        predictions = predict(model, dataset, args.batch_size)
    except ValueError as error:  # non-finite predictions
        raise ValueError(f"{args.model}: {error}") from None
    metrics = compute_metrics(predictions)
    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    paths = parity_plots(predictions, output, title=args.data.name)
    print(format_metrics(metrics, f"{args.data} ({len(dataset)} structures):"))
    print(f"parity plots: {', '.join(map(str, paths))}")
    return 0
