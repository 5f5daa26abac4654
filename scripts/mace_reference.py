"""Random-weight mace-torch model files and mace-torch's own predictions on them, for the
tests of ``equinet.mace_import`` (which never need mace-torch).

    python scripts/mace_reference.py [--out tests/data/mace]

Builds small MACE models (a few channels) of the architectures that ``mace_run_train``
builds for the foundation models, saves each as mace does (``torch.save(model)``, float64)
to ``OUT/<name>.model``, and writes mace-torch's energy, forces, stress and per-atom
energies (float64, through its ASE calculator) on a periodic crystal of several elements
whose cell is smaller than the cutoff and on a molecule to ``OUT/references.json``.

mace-torch pins e3nn 0.4.4, so this file re-runs itself (``--worker``) under the
interpreter of ``.bench/mace-venv`` (created on first use, see ``peers.py``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from peers import MACE_TORCH, PEER_ENV, mace_python

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "mace"
ELEMENTS = [1, 6, 8, 29]
CUTOFF = 4.0
# name: (model class, first interaction block, later interaction blocks, hidden irreps, max_ell, correlation)
# "mp0": ScaleShiftMACE with residual blocks throughout, as MACE-MP-0 is built;
# "off": `mace_run_train --model MACE` (ScaleShiftMACE, plain first block), as MACE-OFF;
# "plain": the MACE class itself (no scale and shift).
CASES = {
    "mp0": ("ScaleShiftMACE", "RealAgnosticResidualInteractionBlock", "RealAgnosticResidualInteractionBlock", "3x0e+3x1o", 1, 3),
    "off": ("ScaleShiftMACE", "RealAgnosticInteractionBlock", "RealAgnosticResidualInteractionBlock", "3x0e", 2, 3),
    "plain": ("MACE", "RealAgnosticInteractionBlock", "RealAgnosticResidualInteractionBlock", "2x0e+2x1o+2x2e", 1, 2),
}  # fmt: skip


# ---------------------------------------------------------------- worker side (mace venv)


def structures():
    """The periodic crystal (4 atoms of 3 elements, cell vectors under the cutoff) and the molecule."""
    from ase import Atoms
    from ase.build import molecule

    cell = [[3.1, 0.0, 0.0], [0.6, 3.3, 0.0], [-0.4, 0.5, 3.4]]
    crystal = Atoms("Cu2OC", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.1], [0.25, 0.6, 0.5], [0.7, 0.2, 0.6]], cell=cell, pbc=True)
    crystal.rattle(0.05, seed=1)
    methanol = molecule("CH3OH")
    methanol.rattle(0.05, seed=2)
    return {"crystal": crystal, "molecule": methanol}


def build(name: str):
    import numpy as np
    import torch
    from e3nn import o3
    from mace import modules

    model_class, first, later, hidden, max_ell, correlation = CASES[name]
    rng = np.random.default_rng(len(name))
    kwargs = dict(
        r_max=CUTOFF, num_bessel=6, num_polynomial_cutoff=5, max_ell=max_ell,
        interaction_cls=modules.interaction_classes[later], interaction_cls_first=modules.interaction_classes[first],
        num_interactions=2, num_elements=len(ELEMENTS), hidden_irreps=o3.Irreps(hidden), MLP_irreps=o3.Irreps("4x0e"),
        atomic_energies=rng.normal(-5.0, 2.0, len(ELEMENTS)), avg_num_neighbors=7.5, atomic_numbers=ELEMENTS,
        correlation=correlation, gate=torch.nn.functional.silu, radial_MLP=[8, 8],
    )  # fmt: skip
    if model_class == "ScaleShiftMACE":
        return modules.ScaleShiftMACE(atomic_inter_scale=1.7, atomic_inter_shift=-0.3, **kwargs)
    return modules.MACE(**kwargs)


def worker(out: Path) -> None:
    import numpy as np
    import torch
    from mace.calculators import MACECalculator

    torch.set_default_dtype(torch.float64)
    atoms_by_name = structures()
    references = {
        "mace_torch": MACE_TORCH,
        "cutoff": CUTOFF,
        "structures": {
            key: {"numbers": a.numbers.tolist(), "positions": a.positions.tolist(), "cell": a.cell.array.tolist(), "pbc": a.pbc.tolist()}
            for key, a in atoms_by_name.items()
        },
        "models": {},
    }
    for name in CASES:
        torch.manual_seed(0)
        model = build(name)
        # Random weights where mace initialises to zero or one, so every weight matters.
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))
        path = out / f"{name}.model"
        torch.save(model, path)
        calculator = MACECalculator(model_paths=str(path), device="cpu", default_dtype="float64")
        results = {}
        for key, atoms in atoms_by_name.items():
            atoms = atoms.copy()
            atoms.calc = calculator
            result = {
                "energy": atoms.get_potential_energy(),
                "forces": atoms.get_forces().tolist(),
                "node_energy": np.asarray(calculator.results["energies"]).tolist(),  # with the E0s
            }
            if atoms.pbc.all():
                result["stress"] = atoms.get_stress(voigt=False).tolist()
            results[key] = result
        references["models"][name] = {"file": path.name, "class": CASES[name][0], "results": results}
    (out / "references.json").write_text(json.dumps(references, indent=1) + "\n")


# ---------------------------------------------------------------- driver side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the model files and references.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        worker(args.out)
        return
    subprocess.run([str(mace_python()), __file__, "--worker", "--out", str(args.out)], check=True, env=PEER_ENV)
    for path in sorted(args.out.iterdir()):
        print(f"{path.stat().st_size / 1024:8.1f} KiB  {path}")


if __name__ == "__main__":
    main()
