"""equinet's import of full-size MACE foundation-model architectures against mace-torch,
in float64 (not run in CI: about 5 minutes on 2 cores; equinet's side peaks at ~10 GB of
memory, on ``mp0-large``).

    python scripts/mace_fullsize.py [--models mp0-small off23-large ... --threads 2 --rebuild]

For each public MACE foundation model, mace-torch builds a model with its hyper-parameters
and random weights (every weight perturbed, so that each one matters), saves it as
``mace_run_train`` does (``torch.save(model)``, float64) under ``.bench/mace_fullsize/``
and computes, through its ASE calculator, the energy, forces, stress and per-atom energies
(with the E0s) of a periodic crystal of several elements whose cell is smaller than the
cutoff (periodic images) and of a molecule (DMSO). equinet imports the same file
(``equinet.import_mace(path, head=..., dtype="float64")``) and computes the same through
``equinet.Calculator``. Printed per model and structure: the largest relative errors
(``|dE|/|E|``, ``max|dF|/max|F|``, ``max|dS|/max|S|``, ``max|de_i|/max|e_i|``) and PASS
or FAIL at 1e-10. A model that ``import_mace`` refuses (``ValueError``) gets one
``unsupported: <message>`` line and the script goes on. Exit status 1 if any model FAILs.

The models are built as ``mace_run_train`` (``mace/tools/model_script_utils.py``) builds
them from each training command: ``--model MACE`` and ``--model ScaleShiftMACE`` both give
a ``ScaleShiftMACE``; ``--model MACE`` forces the first block to
``RealAgnosticInteractionBlock`` unless it is ``RealAgnosticDensityInteractionBlock``.
Common to all (unless said below): 2 interactions, max_ell 3, correlation 3, polynomial
cutoff p = 5, radial MLP [64, 64, 64], MLP_irreps 16x0e, SiLU gate (mace's defaults, or given
in the commands), ``use_reduced_cg=False`` (``mace_run_train``'s default; the files were
written by mace-torch versions whose U matrices are the full, non-reduced ones). What each
case is based on:

* ``mp0-small``/``-medium``/``-large``: MACE-MP-0 (github.com/ACEsuit/mace-mp,
  ``mace_mp_0/2023-12-10-mace-128-L0_energy.sh``, ``2023-12-03-mace-128-L1.sh``,
  ``2024-01-07-mace-128-L2.sh``): ScaleShiftMACE, residual first and later blocks, 128
  channels with max_L 0/1/2 (128x0e, 128x0e+128x1o, 128x0e+128x1o+128x2e), r_max 6,
  10 Bessel functions.
* ``mp0b-medium``: MACE-MP-0b (``mace_mp_0b/mace-agnesi-medium.sh``): ``--model MACE``
  (plain first block, residual later), 128x0e+128x1o, r_max 6, 8 Bessel functions,
  ``--pair_repulsion`` (ZBL), ``--distance_transform Agnesi``.
* ``mp0b3-medium``: MACE-MP-0b3 (``mace_mp_0b3/mace-mp0-b3.sh``): ``--model MACE`` with
  ``RealAgnosticDensityInteractionBlock`` first and ``RealAgnosticDensityResidualInteractionBlock``
  later, 128x0e+128x1o, r_max 6, 10 Bessel functions, ZBL, Agnesi.
* ``mpa0-medium``: MACE-MPA-0: no training command is published; taken as MP-0b3's
  architecture (density blocks, ZBL, Agnesi, r_max 6, 10 Bessel functions).
* ``omat0-medium``: MACE-OMAT-0 (github.com/ACEsuit/mace-foundations,
  ``mace_omat/mace-omat-medium.sh``): ``--model MACE``, density blocks, 128x0e+128x1o,
  r_max 6, ZBL, Agnesi; the number of Bessel functions is not in the command (it reads
  ``config-omat.yaml``, not published): mace's default, 8.
* ``off23-small``/``-medium``/``-large``: MACE-OFF23 (github.com/ACEsuit/mace-off,
  ``mace_off23/train_scripts/medium.sh``; small and large from the MACE-OFF paper):
  ``--model MACE``, 96x0e / 128x0e+128x1o / 192x0e+192x1o+192x2e, r_max 5, 8 Bessel
  functions, elements H C N O F P S Cl Br I.
* ``two-head``: MP-0 medium's architecture with ``heads=["pt_head", "Default"]``, as a
  multi-head fine-tune of it has (per-head E0s, scale, shift and readouts); each head is
  compared (mace-torch's calculator takes the head from its ``head=`` argument;
  ``atoms.info["head"]`` is not read by it in mace-torch 0.3.16).
* ``mh-medium``: MACE-MH-1's training command is not published; this case has the
  options its paper and mace-torch 0.3.16 give the MH models: non-linear interaction blocks
  (``RealAgnosticResidualNonLinearInteractionBlock``) first and later, edge irreps
  128x0e+128x1o+128x2e (scalars only in the first layer, ``use_edge_irreps_first``), one
  product for all elements (``use_agnostic_product``), the cutoff on the radial MLP's
  output (``apply_cutoff=False``), one readout (``use_last_readout_only``), 128x0e+128x1o,
  r_max 6, 10 Bessel functions, two heads.
* ``omol-extra-large``: MACE-OMOL-0 (github.com/ACEsuit/mace-foundations,
  ``mace_omol/mace-omol.sh``): ScaleShiftMACE, non-linear blocks first and later, 3
  interactions, correlation 2, 1024x0e+1024x1o+1024x2e, edge irreps 128x0e+128x1o+128x2e,
  ``apply_cutoff=False``, r_max 6, 8 Bessel functions, and its ``embedding_specs``: the
  spin multiplicity (101 classes, offset 0) and total charge (201 classes, offset 100) of
  each structure, 1024 dimensions each. Its elements are not in the command (they come with
  its statistics file): taken as H to Bi (1-83). Its structures carry a charge and spin in
  ``atoms.info``: the molecular crystal and DMSO neutral singlets, and DMSO as a radical
  cation (charge 1, spin 2) and as a triplet anion (-1, 3). By far the largest case (1024
  channels, three layers): run only when named (``--models omol-extra-large``).

The materials models have MPtrj's 89 elements (1-83 and 89-94, as OMAT-0's command lists
them; the one-hot width is that of the real files). mace-torch pins e3nn 0.4.4, so the
mace-torch half runs under ``.bench/mace-venv`` (``--worker``, one subprocess per model).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from peers import BENCH_DIR, MACE_TORCH, PEER_ENV, mace_python

OUT = BENCH_DIR / "mace_fullsize"
TOLERANCE = 1e-10
MP_ELEMENTS = [*range(1, 84), *range(89, 95)]
OFF_ELEMENTS = [1, 6, 7, 8, 9, 15, 16, 17, 35, 53]
ELEMENTS = {"mp": MP_ELEMENTS, "off": OFF_ELEMENTS, "omol": list(range(1, 84))}
RESIDUAL, PLAIN = "RealAgnosticResidualInteractionBlock", "RealAgnosticInteractionBlock"
DENSITY, DENSITY_RESIDUAL = "RealAgnosticDensityInteractionBlock", "RealAgnosticDensityResidualInteractionBlock"
NONLINEAR = "RealAgnosticResidualNonLinearInteractionBlock"
_MP0 = {"first": RESIDUAL, "later": RESIDUAL, "r_max": 6.0, "num_bessel": 10, "elements": "mp"}
_MP0B3 = {**_MP0, "first": DENSITY, "later": DENSITY_RESIDUAL, "pair_repulsion": True, "distance_transform": "Agnesi"}
_OFF = {"first": PLAIN, "later": RESIDUAL, "r_max": 5.0, "num_bessel": 8, "elements": "off"}
CASES = {
    "mp0-small": {**_MP0, "hidden": "128x0e"},
    "mp0-medium": {**_MP0, "hidden": "128x0e+128x1o"},
    "mp0-large": {**_MP0, "hidden": "128x0e+128x1o+128x2e"},
    "mp0b-medium": {**_MP0, "first": PLAIN, "num_bessel": 8, "hidden": "128x0e+128x1o", "pair_repulsion": True, "distance_transform": "Agnesi"},
    "mp0b3-medium": {**_MP0B3, "hidden": "128x0e+128x1o"},
    "mpa0-medium": {**_MP0B3, "hidden": "128x0e+128x1o"},
    "omat0-medium": {**_MP0B3, "num_bessel": 8, "hidden": "128x0e+128x1o"},
    "off23-small": {**_OFF, "hidden": "96x0e"},
    "off23-medium": {**_OFF, "hidden": "128x0e+128x1o"},
    "off23-large": {**_OFF, "hidden": "192x0e+192x1o+192x2e"},
    "two-head": {**_MP0, "hidden": "128x0e+128x1o", "heads": ["pt_head", "Default"]},
    "mh-medium": {**_MP0, "first": NONLINEAR, "later": NONLINEAR, "hidden": "128x0e+128x1o", "heads": ["omat_pbe", "Default"],
                        "options": {"edge_irreps": "128x0e+128x1o+128x2e", "use_edge_irreps_first": True,
                                    "use_agnostic_product": True, "apply_cutoff": False, "use_last_readout_only": True}},
    "omol-extra-large": {"first": NONLINEAR, "later": NONLINEAR, "r_max": 6.0, "num_bessel": 8, "elements": "omol",
                         "hidden": "1024x0e+1024x1o+1024x2e", "num_interactions": 3, "correlation": 2,
                         "options": {"edge_irreps": "128x0e+128x1o+128x2e", "apply_cutoff": False, "embedding_specs": {
                             "total_spin": {"type": "categorical", "per": "graph", "in_dim": 1, "emb_dim": 1024, "num_classes": 101, "offset": 0},
                             "total_charge": {"type": "categorical", "per": "graph", "in_dim": 1, "emb_dim": 1024, "num_classes": 201, "offset": 100}}}},
}  # fmt: skip
DEFAULT_CASES = [name for name in CASES if name != "omol-extra-large"]
STRUCTURES_VERSION = 1  # bump when structures() changes, so that cached references are rebuilt


# ---------------------------------------------------------------- worker side (mace venv)
# Only the standard library at the top: this half runs under mace-torch's interpreter.


def rock_salt(repeats: int = 1, rattle: float = 0.05, seed: int = 0):
    """Rattled rock-salt (Mg,Co,Ni)O: the 8-atom conventional cell (a = 4.21 Å) repeated
    ``repeats`` times along each axis, cations drawn at random from Mg, Co and Ni (seeded)."""
    import numpy as np
    from ase.build import bulk

    atoms = bulk("MgO", "rocksalt", a=4.21, cubic=True) * (repeats, repeats, repeats)
    rng = np.random.default_rng(seed)
    cations = np.flatnonzero(atoms.numbers == 12)
    atoms.numbers[cations] = rng.choice([12, 27, 28], size=len(cations))
    atoms.numbers[cations[:3]] = [12, 27, 28]  # all three in every cell, however small
    atoms.rattle(rattle, seed=seed)
    return atoms


def structures(family: str) -> dict:
    """The periodic crystal of the model's elements (cell vectors under the cutoff) and the
    molecule; for ``omol``, also the molecule charged (``atoms.info`` charge and spin)."""
    from ase import Atoms
    from ase.build import molecule

    if family == "mp":
        crystal = rock_salt()
        crystal.set_cell(crystal.cell.array + [[0.0, 0.1, -0.05], [0.08, 0.0, 0.0], [0.0, -0.06, 0.0]], scale_atoms=True)
    else:  # a molecular crystal: methanol, ammonia, HCl and H2S in a small triclinic cell
        crystal = Atoms(cell=[[6.5, 0.0, 0.0], [0.4, 6.8, 0.0], [-0.3, 0.5, 7.0]], pbc=True)
        for name, where in (("CH3OH", (1.5, 1.5, 1.5)), ("NH3", (4.6, 1.8, 4.0)), ("HCl", (1.8, 4.8, 4.6)), ("SH2", (4.8, 5.0, 1.4))):
            part = molecule(name)
            part.translate(where)
            crystal += part
        crystal.rattle(0.05, seed=1)
    dmso = molecule("C2H6SO")
    dmso.rattle(0.05, seed=2)
    found = {"crystal": crystal, "molecule": dmso}
    if family == "omol":
        for name, charge, spin in (("cation", 1, 2), ("triplet-anion", -1, 3)):
            found[name] = dmso.copy()
            found[name].info.update(charge=charge, spin=spin)
    return found


def build(name: str):
    """The mace-torch model of case ``name`` with random weights (float64)."""
    import numpy as np
    import torch
    from e3nn import o3
    from mace import modules

    case = CASES[name]
    elements = ELEMENTS[case["elements"]]
    heads = case.get("heads", ["Default"])
    rng = np.random.default_rng(len(name))
    energies = rng.normal(-5.0, 2.0, (len(heads), len(elements)) if len(heads) > 1 else len(elements))
    scale, shift = ([1.7, 0.9][: len(heads)], [-0.3, 0.2][: len(heads)]) if len(heads) > 1 else (1.7, -0.3)
    options = dict(case.get("options", {}))
    if "edge_irreps" in options:
        options["edge_irreps"] = o3.Irreps(options["edge_irreps"])
    torch.manual_seed(0)
    model = modules.ScaleShiftMACE(
        atomic_inter_scale=scale, atomic_inter_shift=shift,
        r_max=case["r_max"], num_bessel=case["num_bessel"], num_polynomial_cutoff=5, max_ell=3,
        interaction_cls=modules.interaction_classes[case["later"]],
        interaction_cls_first=modules.interaction_classes[case["first"]],
        num_interactions=case.get("num_interactions", 2), num_elements=len(elements), hidden_irreps=o3.Irreps(case["hidden"]),
        MLP_irreps=o3.Irreps("16x0e"), atomic_energies=energies, avg_num_neighbors=40.0, atomic_numbers=elements,
        correlation=case.get("correlation", 3), gate=torch.nn.functional.silu, radial_MLP=[64, 64, 64],
        pair_repulsion=case.get("pair_repulsion", False), distance_transform=case.get("distance_transform", "None"),
        heads=heads, use_reduced_cg=False, **options,
    )  # fmt: skip
    # Random weights where mace initialises to zero or one, so every weight matters.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def worker(name: str, out: Path) -> None:
    """Build case ``name``, save it to ``out/<name>.model`` and write mace-torch's results to
    ``out/<name>.json``."""
    import numpy as np
    import torch
    from mace.calculators import MACECalculator

    torch.set_default_dtype(torch.float64)
    model = build(name)
    path = out / f"{name}.model"
    torch.save(model, path)
    del model
    results = {}
    for head in CASES[name].get("heads", [None]):
        calculator = MACECalculator(model_paths=str(path), device="cpu", default_dtype="float64", **({"head": head} if head else {}))
        for key, atoms in structures(CASES[name]["elements"]).items():
            atoms.calc = calculator
            result = {
                "energy": atoms.get_potential_energy(),
                "forces": atoms.get_forces().tolist(),
                "energies": np.asarray(calculator.results["energies"]).tolist(),  # with the E0s
            }
            if atoms.pbc.all():
                result["stress"] = atoms.get_stress(voigt=False).tolist()
            results[f"{head or 'Default'}/{key}"] = result
    record = {"case": CASES[name], "structures_version": STRUCTURES_VERSION, "mace_torch": MACE_TORCH, "results": results}
    (out / f"{name}.json").write_text(json.dumps(record) + "\n")


# ---------------------------------------------------------------- driver side


def mace_reference(name: str, python: Path, threads: int, rebuild: bool = False) -> dict:
    """mace-torch's results for case ``name`` (its model file is ``OUT/<name>.model``), from
    the cache when the case, the structures and mace-torch's version are unchanged."""
    OUT.mkdir(parents=True, exist_ok=True)
    cached = OUT / f"{name}.json"
    if not rebuild and cached.exists() and (OUT / f"{name}.model").exists():
        record = json.loads(cached.read_text())
        if record["case"] == CASES[name] and record["structures_version"] == STRUCTURES_VERSION and record["mace_torch"] == MACE_TORCH:
            return record
    command = [str(python), __file__, "--worker", name, "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, env={**PEER_ENV, "OMP_NUM_THREADS": str(threads)})
    if done.returncode != 0:
        raise RuntimeError(f"mace-torch worker for {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(cached.read_text())


def _relative(ours, theirs) -> float:
    import numpy as np

    ours, theirs = np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float)
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-300))


def _compare(name: str, record: dict) -> list[tuple[str, dict | str]]:
    """``(head/structure, {quantity: relative error})`` rows, or ``(head, "unsupported: ...")``."""
    import equinet

    rows = []
    path = OUT / f"{name}.model"
    for head in CASES[name].get("heads", [None]):
        label = head or "Default"
        try:
            model = equinet.import_mace(path, head=head, dtype="float64")
        except ValueError as error:
            rows.append((label, f"unsupported: {error}"))
            continue
        calculator = equinet.Calculator(model)
        for key, atoms in structures(CASES[name]["elements"]).items():
            reference = record["results"][f"{label}/{key}"]
            atoms.calc = calculator
            errors = {
                "E": _relative(atoms.get_potential_energy(), reference["energy"]),
                "F": _relative(atoms.get_forces(), reference["forces"]),
                "e_i": _relative(calculator.results["energies"], reference["energies"]),
            }
            if "stress" in reference:
                errors["S"] = _relative(atoms.get_stress(voigt=False), reference["stress"])
            rows.append((f"{label}/{key} ({len(atoms)} atoms)", errors))
        del model, calculator
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(CASES), default=DEFAULT_CASES, help="which cases (default: all but omol-extra-large)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the mace-torch models and references even if cached")
    parser.add_argument("--worker", choices=list(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(args.threads)
    if args.worker:
        worker(args.worker, OUT)
        return

    python = mace_python()
    failed = False
    print(f"{MACE_TORCH} against equinet, float64; relative errors (max |d| / max |reference|), tolerance {TOLERANCE:.0e}")
    print(f"{'model':18}{'head/structure':34}{'E':>10}{'F':>10}{'S':>10}{'e_i':>10}  verdict")
    for name in args.models:
        start = time.perf_counter()
        record = mace_reference(name, python, args.threads, args.rebuild)
        built = time.perf_counter() - start
        start = time.perf_counter()
        try:
            rows = _compare(name, record)
        except Exception as error:  # a crash of equinet's side is a failure of this model, not of the script
            rows = [("-", f"ERROR {type(error).__name__}: {error}")]
        for label, errors in rows:
            if isinstance(errors, str):
                failed |= errors.startswith("ERROR")
                print(f"{name:18}{label:34}{errors}")
                continue
            worst = max(errors.values())
            failed |= not worst <= TOLERANCE
            cells = "".join(f"{errors[q]:10.1e}" if q in errors else f"{'-':>10}" for q in ("E", "F", "S", "e_i"))
            print(f"{name:18}{label:34}{cells}  {'PASS' if worst <= TOLERANCE else 'FAIL'}")
        print(f"{'':18}(mace-torch build + reference {built:.0f} s, equinet import + compare {time.perf_counter() - start:.0f} s)", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
