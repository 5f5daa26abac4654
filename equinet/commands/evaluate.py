"""``equinet evaluate MODEL DATA``: the metrics table and parity plots of a model on any data file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from equinet.commands import positive_int


def register(commands) -> None:
    parser = commands.add_parser("evaluate", help="errors of a trained model on a data file, with parity plots")
    parser.add_argument("model", type=Path, help="a deployed model (model.pt), or a committee file (committee.yaml): then also how its spread tracks its error")
    parser.add_argument("data", type=Path, help="any ASE-readable file, rMD17 .npz or equinet .h5")
    parser.add_argument("--output", type=Path, default=None, help="folder for plots and metrics (default: next to the model)")
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--device", default="cpu")
    for label in ("energy", "forces", "stress", "dipole", "polarizability"):
        parser.add_argument(f"--{label}-key", default=None, help=f"key of the {label} label in the data")
    parser.add_argument("--energy-unit", default="eV", help="unit of the data's energies, e.g. kcal/mol (default eV)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from equinet.calculator import Calculator, available_memory_gb, check_device
    from equinet.committee import is_committee_file
    from equinet.committee_evaluation import CommitteeMean
    from equinet.datasets import check_elements, load_dataset
    from equinet.evaluation import compute_metrics, format_metrics, parity_plots, predict
    from equinet.files import UsageError
    from equinet.model_io import load_model

    output = args.output or args.model.parent / f"evaluate_{args.data.stem}"
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output}: is a file; give a folder for the metrics and plots")
    device = check_device(args.device)
    members = Calculator(args.model, device=device, dispersion=False).models if is_committee_file(args.model) else []
    model = CommitteeMean(members) if members else load_model(args.model, device)
    for member in members or [model]:  # edges in blocks where a structure is large (half the free memory)
        member.set_memory_budget(available_memory_gb(device) / 2)
    keys = {key: getattr(args, f"{key}_key") for key in ("energy", "forces", "stress", "dipole", "polarizability")}
    dtype = model.atomic_energies.dtype
    required = ("energy",) if "energy" in model.outputs else ()  # the other labels where the data has them
    dataset = load_dataset(args.data, model.cutoff, keys=keys, required=required, energy_unit=args.energy_unit, dtype=dtype)
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
    paths = parity_plots(predictions, output, title=args.data.name)
    title = f"{args.data} ({len(dataset)} structures{f', mean of a committee of {len(members)}' if members else ''}):"
    if len(members) > 1:
        metrics["committee"] = _calibration(members, dataset, args.batch_size, output)
        paths.append(output / "calibration_forces.png")
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(format_metrics({key: value for key, value in metrics.items() if key != "committee"}, title))
    if "committee" in metrics:
        committee = metrics["committee"]
        print(f"committee: Spearman correlation of force spread and force error over {committee['structures']} structures: {committee['spearman_force_spread_error']:.3f}")
    print(f"plots: {', '.join(map(str, paths))}")
    return 0


def _calibration(members, dataset, batch_size: int, output: Path) -> dict:
    import numpy as np
    from scipy.stats import spearmanr

    from equinet.committee_evaluation import calibration_plot, force_spread_and_error

    spread, error = force_spread_and_error(members, dataset, batch_size)
    if len(spread) < 2:
        raise ValueError("a committee's calibration needs force labels on two or more structures")
    rho = float(spearmanr(spread, error).statistic)
    calibration_plot(spread, error, output / "calibration_forces.png", rho)
    return {"members": len(members), "structures": len(spread), "spearman_force_spread_error": rho,
            "mean_force_spread": float(spread.mean()), "mean_force_rmse": float(np.sqrt((error**2).mean()))}
