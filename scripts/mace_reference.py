"""Random-weight mace-torch model files and mace-torch's own predictions on them, for the
tests of ``equinet.mace_import`` (which never need mace-torch).

    python scripts/mace_reference.py [--out tests/data/mace]

Builds small MACE models (a few channels) of the architectures that ``mace_run_train``
builds for the foundation models, saves each as mace does (``torch.save(model)``, float64)
to ``OUT/<name>.model``, and writes mace-torch's energy, forces, stress and per-atom
energies (float64, through its ASE calculator; for each head of a multi-head model) on a
periodic crystal of several elements whose cell is smaller than the cutoff and on a
molecule to ``OUT/references.json``; a model that embeds the total charge and spin
(MACE-OMOL's ``embedding_specs``) also on molecules of several charges and spin
multiplicities (``atoms.info["charge"]``, ``atoms.info["spin"]``, as mace-torch reads them).

mace-torch pins e3nn 0.4.4, so this file re-runs itself (``--worker``) under the
interpreter of ``.bench/mace-venv`` (created on first use, see ``peers.py``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from peers import MACE_TORCH, PEER_ENV, mace_python

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "mace"
ELEMENTS = [1, 6, 8, 29]
CUTOFF = 4.0
RESIDUAL, PLAIN = "RealAgnosticResidualInteractionBlock", "RealAgnosticInteractionBlock"
DENSITY_RESIDUAL, DENSITY = "RealAgnosticDensityResidualInteractionBlock", "RealAgnosticDensityInteractionBlock"
NONLINEAR = "RealAgnosticResidualNonLinearInteractionBlock"


def omol_embedding(channels: int) -> dict:
    """MACE-OMOL-0's ``embedding_specs`` (mace-foundations' mace_omol/mace-omol.sh) with its
    1024 embedding dimensions cut to ``channels``: the spin multiplicity 0..100 and the total
    charge -100..100 of each structure, each a learned table row."""
    return {
        "total_spin": {"type": "categorical", "per": "graph", "in_dim": 1, "emb_dim": channels, "num_classes": 101, "offset": 0},
        "total_charge": {"type": "categorical", "per": "graph", "in_dim": 1, "emb_dim": channels, "num_classes": 201, "offset": 100},
    }


# name: the architecture (mace's keyword arguments beside those shared in build()):
CASES = {
    # ScaleShiftMACE with residual blocks throughout, as MACE-MP-0 is built
    "mp0": dict(cls="ScaleShiftMACE", first=RESIDUAL, later=RESIDUAL, hidden="3x0e+3x1o", max_ell=1, correlation=3),
    # `mace_run_train --model MACE` (ScaleShiftMACE, plain first block), as MACE-OFF
    "off": dict(cls="ScaleShiftMACE", first=PLAIN, later=RESIDUAL, hidden="3x0e", max_ell=2, correlation=3),
    # the MACE class itself (no scale and shift)
    "plain": dict(cls="MACE", first=PLAIN, later=RESIDUAL, hidden="2x0e+2x1o+2x2e", max_ell=1, correlation=2),
    # MACE-MP-0b3, MPA-0, OMAT-0: density-normalised blocks, ZBL, Agnesi
    "mpa": dict(cls="ScaleShiftMACE", first=DENSITY, later=DENSITY_RESIDUAL, hidden="2x0e+2x1o", max_ell=1, correlation=2,
                pair_repulsion=True, distance_transform="Agnesi"),
    # Gaussian basis, Soft transform, ZBL in the unscaled MACE class
    "gaussian_soft": dict(cls="MACE", first=DENSITY_RESIDUAL, later=DENSITY_RESIDUAL, hidden="2x0e+2x1o", max_ell=1,
                          correlation=2, pair_repulsion=True, distance_transform="Soft", radial_type="gaussian"),
    # MACE-MH: non-linear blocks, edge irreps (scalars only in the first layer), one product
    # for all elements, the envelope on the radial MLP's output, one readout; two heads with
    # their own reference energies, scale and shift, as multi-head fine-tuning writes
    "mh": dict(cls="ScaleShiftMACE", first=NONLINEAR, later=NONLINEAR, hidden="2x0e+2x1o", max_ell=1, correlation=2,
               edge_irreps="3x0e+3x1o+3x2e", use_edge_irreps_first=True, use_agnostic_product=True, apply_cutoff=False,
               use_last_readout_only=True, heads=["pt_head", "Default"]),
    # a linear residual first block before non-linear ones, the envelope on the radial basis;
    # MACE-MP-0b's ZBL repulsion (scaled with the learned energy) and Agnesi transform
    "mh_mixed": dict(cls="ScaleShiftMACE", first=RESIDUAL, later=NONLINEAR, hidden="2x0e+2x1o", max_ell=1, correlation=2,
                     edge_irreps="2x0e+2x1o+2x2e", pair_repulsion=True, distance_transform="Agnesi"),
    # MACE-OMOL-0: its joint embedding of total charge and spin multiplicity, non-linear blocks
    # with edge irreps and the envelope on the radial MLP's output; one interaction (its only
    # readout is linear) to keep the file small
    "omol": dict(cls="ScaleShiftMACE", first=NONLINEAR, later=NONLINEAR, hidden="3x0e+3x1o", max_ell=1, correlation=2,
                 edge_irreps="3x0e+3x1o+3x2e", apply_cutoff=False, num_interactions=1, embedding_specs=omol_embedding(3)),
}  # fmt: skip


# ---------------------------------------------------------------- worker side (mace venv)


def structures():
    """The periodic crystal (5 atoms of 4 elements, cell vectors under the cutoff), a molecule
    and a cluster of atoms pressed closer than their covalent radii."""
    from ase import Atom, Atoms
    from ase.build import molecule

    cell = [[3.1, 0.0, 0.0], [0.6, 3.3, 0.0], [-0.4, 0.5, 3.4]]
    crystal = Atoms("Cu2OC", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.1], [0.25, 0.6, 0.5], [0.7, 0.2, 0.6]], cell=cell, pbc=True)
    crystal.rattle(0.05, seed=1)
    crystal.append(Atom("H", crystal.positions[2] + [0.8, 0.3, 0.0]))  # O-H closer than their covalent radii: ZBL acts
    methanol = molecule("CH3OH")
    methanol.rattle(0.05, seed=2)
    # atoms closer than their covalent radii, where the ZBL repulsion and the distance transforms matter
    close = Atoms("CuOCH", positions=[[0.0, 0.0, 0.0], [1.25, 0.0, 0.0], [0.0, 1.3, 0.2], [1.0, 1.0, 0.9]])
    return {"crystal": crystal, "molecule": methanol, "close": close}


def charged_structures():
    """Molecules with their total charge and spin multiplicity in ``atoms.info``: a radical
    cation, an anion, a triplet and a doubly charged copper complex."""
    from ase import Atoms
    from ase.build import molecule

    cation = molecule("CH3OH")
    cation.rattle(0.05, seed=3)
    anion = molecule("CH3OH")  # C, O, H, H (on O), H, H
    del anion[3]  # methoxide
    anion.rattle(0.05, seed=4)
    triplet = molecule("CH2_s3B1d")
    triplet.rattle(0.05, seed=5)
    copper = Atoms("CuOHHOHH", positions=[[0, 0, 0], [1.95, 0, 0], [2.5, 0.75, 0], [2.5, -0.75, 0.1],
                                           [-1.95, 0.1, 0], [-2.5, 0.8, 0.2], [-2.5, -0.7, 0]])  # fmt: skip
    for atoms, charge, spin in ((cation, 1, 2), (anion, -1, 1), (triplet, 0, 3), (copper, 2, 2)):
        atoms.info.update(charge=charge, spin=spin)
    return {"cation": cation, "anion": anion, "triplet": triplet, "copper": copper}


def build(name: str):
    import numpy as np
    import torch
    from e3nn import o3
    from mace import modules

    case = dict(CASES[name])
    model_class, first, later, hidden = (case.pop(key) for key in ("cls", "first", "later", "hidden"))
    heads = case.get("heads", ["Default"])
    if "edge_irreps" in case:
        case["edge_irreps"] = o3.Irreps(case["edge_irreps"])
    rng = np.random.default_rng(len(name))
    energies = rng.normal(-5.0, 2.0, (len(heads), len(ELEMENTS)))
    kwargs = dict(
        r_max=CUTOFF, num_bessel=6, num_polynomial_cutoff=5, num_interactions=case.pop("num_interactions", 2),
        interaction_cls=modules.interaction_classes[later], interaction_cls_first=modules.interaction_classes[first],
        num_elements=len(ELEMENTS), hidden_irreps=o3.Irreps(hidden), MLP_irreps=o3.Irreps("4x0e"),
        atomic_energies=energies if len(heads) > 1 else energies[0], avg_num_neighbors=7.5, atomic_numbers=ELEMENTS,
        gate=torch.nn.functional.silu, radial_MLP=[8, 8], **case,
    )  # fmt: skip
    if model_class == "ScaleShiftMACE":
        scale, shift = [1.7, 0.8][: len(heads)], [-0.3, 0.2][: len(heads)]
        return modules.ScaleShiftMACE(atomic_inter_scale=scale if len(heads) > 1 else scale[0], atomic_inter_shift=shift if len(heads) > 1 else shift[0], **kwargs)
    return modules.MACE(**kwargs)


def worker(out: Path) -> None:
    import numpy as np
    import torch
    from mace.calculators import MACECalculator

    torch.set_default_dtype(torch.float64)
    neutral, charged = structures(), charged_structures()
    references = {
        "mace_torch": MACE_TORCH,
        "cutoff": CUTOFF,
        "structures": {
            key: {"numbers": a.numbers.tolist(), "positions": a.positions.tolist(), "cell": a.cell.array.tolist(), "pbc": a.pbc.tolist(), **a.info}
            for key, a in {**neutral, **charged}.items()
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
        heads = CASES[name].get("heads", [None])
        for head in heads:
            calculator = MACECalculator(model_paths=str(path), device="cpu", default_dtype="float64", head=head)
            results = {}
            for key, atoms in ({**neutral, **charged} if "embedding_specs" in CASES[name] else neutral).items():
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
            entry = name if head is None else f"{name}:{head}"
            references["models"][entry] = {"file": path.name, "head": head, "class": CASES[name]["cls"], "results": results}
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
