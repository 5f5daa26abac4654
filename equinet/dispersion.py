"""Grimme's DFT-D3 dispersion correction on top of a potential, computed by s-dftd3, the
reference implementation (the ``dftd3`` package, an optional extra: ``pip install 'equinet[d3]'``).

    calc = equinet.Calculator("mace-mp0.model", dispersion="d3bj", functional="pbe")

Semi-local DFT (PBE, as in most materials data and the MACE-MP models) misses van der Waals
binding. D3 adds it as damped ``-C6/r^6 - C8/r^8`` pair terms whose coefficients follow each
atom's coordination number. The defaults are those of MACE-MP + D3 in mace-torch: two-body
terms only, within 40 Bohr (21.2 Å), and coordination numbers within 40 Bohr;
``three_body=True`` adds the Axilrod–Teller–Muto term. LAMMPS's ``pair_style dispersion/d3``
with the same settings gives the same D3 but for its unit constants and, in metal alloys, its
C6 interpolation (README, LAMMPS).
Periodic cells are summed over all images within the cutoffs.

Training can learn only the short-range rest: ``data.dispersion`` in the config subtracts D3
from the labels (:func:`subtract_from_labels`), the model file records the settings
(:meth:`D3Dispersion.settings`), and the calculator adds D3 back for such a model.

(tad-dftd3, D3 in PyTorch, handles molecules only, so s-dftd3 computes D3 here.)
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.units import Bohr, Hartree

__all__ = ["DAMPINGS", "D3Dispersion", "subtract_from_labels"]

#: Damping functions: Becke–Johnson (rational), zero, and their modified forms (Sherrill et al.).
DAMPINGS = {
    "d3bj": "RationalDampingParam", "d3zero": "ZeroDampingParam",
    "d3bjm": "ModifiedRationalDampingParam", "d3zerom": "ModifiedZeroDampingParam",
}  # fmt: skip
DEFAULT_CUTOFF = 40.0 * Bohr  # Å, as mace-torch's D3 and LAMMPS's examples


class D3Dispersion:
    """DFT-D3 energies, forces, stress, per-atom energies and Hessians of ``ase.Atoms``.

    Args:
        damping: one of :data:`DAMPINGS` (``"d3bj"``: Becke–Johnson, ``"d3zero"``: zero damping).
        functional: the DFT functional of the potential's training data (``"pbe"``,
            ``"r2scan"``, ...): s-dftd3 has damping parameters for each.
        cutoff: two-body cutoff in Å.
        cn_cutoff: cutoff of the coordination numbers in Å.
        three_body: add the three-body (ATM) term, within ``cn_cutoff``.

    Raises:
        ValueError: in one line: ``dftd3`` is not installed, an unknown damping, or a
            functional that s-dftd3 has no parameters for.
    """

    def __init__(
        self,
        damping: str = "d3bj",
        functional: str = "pbe",
        cutoff: float = DEFAULT_CUTOFF,
        cn_cutoff: float = DEFAULT_CUTOFF,
        three_body: bool = False,
    ):
        try:
            from dftd3 import interface
        except ModuleNotFoundError:
            raise ValueError("D3 dispersion needs s-dftd3's Python package: pip install 'equinet[d3]' (or pip install dftd3)") from None
        if damping not in DAMPINGS:
            raise ValueError(f"dispersion must be one of {', '.join(DAMPINGS)}, got {damping!r}")
        if not (cutoff > 0 and cn_cutoff > 0):
            raise ValueError(f"D3 cutoffs must be positive distances in Å, got {cutoff!r} and {cn_cutoff!r}")
        try:
            self.param = getattr(interface, DAMPINGS[damping])(method=functional, atm=three_body)
        except RuntimeError:
            raise ValueError(f"s-dftd3 has no {damping} parameters for the functional {functional!r}") from None
        self.damping, self.functional, self.three_body = damping, functional, three_body
        self.cutoff, self.cn_cutoff = float(cutoff), float(cn_cutoff)
        self._model_class = interface.DispersionModel

    def settings(self) -> dict:
        """The arguments that rebuild this correction (as recorded in a model file)."""
        return {
            "damping": self.damping, "functional": self.functional, "cutoff": self.cutoff,
            "cn_cutoff": self.cn_cutoff, "three_body": self.three_body,
        }  # fmt: skip

    def __repr__(self) -> str:
        three = ", three-body" if self.three_body else ""
        return f"D3({self.damping}, {self.functional}, cutoff {self.cutoff:.2f} Å, cn cutoff {self.cn_cutoff:.2f} Å{three})"

    def _model(self, atoms: Atoms):
        periodic = atoms.pbc if atoms.pbc.any() else None
        lattice = atoms.cell.array / Bohr if periodic is not None else None
        model = self._model_class(atoms.numbers, atoms.positions / Bohr, lattice, periodic)
        model.set_realspace_cutoff(self.cutoff / Bohr, self.cn_cutoff / Bohr, self.cn_cutoff / Bohr)
        return model

    def __call__(self, atoms: Atoms, energies: bool = False) -> dict[str, np.ndarray | float]:
        """``energy`` (eV), ``forces`` ``[n, 3]`` (eV/Å), for fully periodic cells ``stress``
        ``[3, 3]`` (eV/Å³, ASE's sign) and, if asked, ``energies`` ``[n]`` (eV, summing to the energy)."""
        model = self._model(atoms)
        result = model.get_dispersion(self.param, grad=True)
        out = {"energy": float(result["energy"]) * Hartree, "forces": -result["gradient"] * (Hartree / Bohr)}
        if atoms.pbc.all():
            out["stress"] = result["virial"] * Hartree / atoms.get_volume()
        if energies:
            pairs = model.get_pairwise_dispersion(self.param)
            out["energies"] = (pairs["additive pairwise energy"] + pairs["non-additive pairwise energy"]).sum(1) * Hartree
        return out

    def hessian(self, atoms: Atoms) -> np.ndarray:
        """``d²E/dr dr`` ``[3n, 3n]`` in eV/Å² (analytical, from s-dftd3)."""
        hessian = self._model(atoms).get_hessian(self.param)["hessian"]
        return hessian.reshape(3 * len(atoms), 3 * len(atoms)) * (Hartree / Bohr**2)


def subtract_from_labels(graphs: list, dispersion: D3Dispersion) -> None:
    """Subtract D3 from the energy, forces and stress labels of graphs (in place; absent
    labels stay absent): what is left is what a model learns when D3 is added at run time.

    Raises:
        ValueError: ``graphs`` is not a list of graphs (an ``.h5`` data set is read lazily).
    """
    import torch

    from equinet.datasets import graph_to_atoms

    if not isinstance(graphs, list):
        raise ValueError("data.dispersion corrects the labels of ASE-readable and .npz files; an .h5 data set is read lazily: convert it to extxyz, or leave data.dispersion out")
    for graph in graphs:
        correction = dispersion(graph_to_atoms(graph), energies="node_energy" in graph)
        dtype = graph.pos.dtype
        if "energy" in graph:
            graph.energy = graph.energy - correction["energy"]
        if "forces" in graph:
            graph.forces = graph.forces - torch.tensor(correction["forces"], dtype=dtype)
        if "stress" in graph and "stress" in correction:
            graph.stress = graph.stress - torch.tensor(correction["stress"], dtype=dtype).view(1, 3, 3)
        if "node_energy" in graph:
            graph.node_energy = graph.node_energy - torch.tensor(correction["energies"], dtype=dtype)
