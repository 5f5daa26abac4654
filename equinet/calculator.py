"""ASE calculator for equinet potentials.

    atoms.calc = equinet.Calculator("run/model.pt")
    atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    atoms = calc.atoms_for(pymatgen_structure)          # pymatgen Structure or Molecule
    calc.get_hessian(atoms), calc.get_elastic_tensor(atoms)   # by autograd: eV/Å², GPa
    atoms.get_dipole_moment(), calc.get_born_charges(atoms)   # models with model.outputs [energy, dipole]
    equinet.Calculator("mace-mp0.model", dispersion="d3bj", functional="pbe")   # + DFT-D3

The neighbour list is rebuilt with vesin on every call (all periodic images, so cells
smaller than the cutoff, slabs and molecules without a cell all work).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator as _ASECalculator
from ase.calculators.calculator import all_changes
from ase.data import chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress
from torch_geometric.data import Batch

from equinet.committee import check_members, expand_committees
from equinet.datasets import atoms_to_graph
from equinet.derivatives import born_charges, elastic_tensor, hessian, require_energy
from equinet.dispersion import D3Dispersion
from equinet.foreign.mace import import_mace
from equinet.model_io import load_model
from equinet.potentials import Potential, accelerate
from equinet.potentials.dtypes import DTYPES

__all__ = ["Calculator"]


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` that this machine has; one line if it has not."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' was requested but torch sees no CUDA GPU here; use device='cpu'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device '{device}' was requested but torch sees {torch.cuda.device_count()} CUDA GPU(s) here")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device '{device}' is not supported; use 'cpu' or 'cuda'")
    return device


def available_memory_gb(device: torch.device) -> float:
    """Memory free for new tensors now, in GiB: the GPU's for a CUDA device, else the
    machine's (``MemAvailable``, Linux; 8 GiB where unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] / 2**30
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 8.0


class Calculator(_ASECalculator):
    """An equinet potential, or a committee of them, as an ASE calculator.

    Args:
        model: path of a deployed ``model.pt``, of a mace-torch ``.model`` file (imported by
            :func:`equinet.import_mace`), a :class:`~equinet.potentials.Potential`, or a
            list of these or a committee file (:mod:`equinet.committee`): a committee, whose
            mean is the prediction and whose spread is its uncertainty (the members must
            share elements and cutoff).
        device: ``"cpu"``, ``"cuda"``, ...
        dtype: ``"float32"`` or ``"float64"`` to run in; ``None`` keeps the model's.
        head: the head of a multi-head ``.model`` file to run.
        backend: ``None`` keeps the backends of the model's operators (the PyTorch reference
            for a model file); a name (``"auto"``, ``"cpp"``, ...) for every operator, or
            ``{"conv": ..., "product": ...}``, runs them on others (:func:`equinet.accelerate`,
            in place).
        dispersion: a D3 damping (``"d3bj"``, ``"d3zero"``, ...; see
            :mod:`equinet.dispersion`) or a :class:`~equinet.dispersion.D3Dispersion`, added
            to every property (and to the Hessian); ``None``: the D3 that a model trained
            with ``data.dispersion`` records (none for other models); ``True``: ``"d3bj"``;
            ``False``: none, even for such a model.
        functional: the DFT functional of the training data, for the D3 parameters.
        max_memory_gb: memory for one evaluation, in GiB: the models compute their edges in
            blocks sized to it (:meth:`~equinet.potentials.Potential.set_memory_budget`), so
            large systems fit; ``None``: half of what is free on the device now.

    Properties: ``energy`` and ``free_energy`` (eV), ``forces`` (eV/Å), ``stress``
    (eV/Å³, ASE's Voigt order and sign; fully periodic cells only) and ``energies``
    (per atom, eV). A committee's ``results`` also hold ``energy_std`` (eV),
    ``forces_std`` ``[n]`` (eV/Å, per atom the norm of the force components' standard
    deviations) and ``energies_committee`` ``[M]`` (each member's energy).

    A model with tensorial outputs (``model.outputs``, :mod:`equinet.potentials.heads`) adds
    ``dipole`` (e·Å, ASE's name: ``atoms.get_dipole_moment()``) with the atomic ``charges``
    (e), and ``polarizability`` ``[3, 3]`` (Å³); ``born_charges`` ``[n, 3, 3]`` (e,
    ``d mu_a / d r_ib``) by autograd when asked for (``calc.get_born_charges(atoms)`` or
    ``calc.get_property("born_charges", atoms)``). A model without ``energy`` gives only these.
    The Hessian ``[3n, 3n]`` (eV/Å²) is a property too, computed when asked for
    (``calc.get_hessian(atoms)``), and then in ``calc.results["hessian"]``.

    Each structure's total charge is ``atoms.info["charge"]`` (e, default 0) and its spin
    multiplicity 2S+1 ``atoms.info["spin"]`` (default 1), as in mace-torch and fairchem: the
    charge constrains the atomic charges of a dipole model, and a model with a charge or spin
    embedding (MACE-OMOL-0) reads both. Changing either is a change of the structure: the
    next property is computed anew.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]
    _TENSORIAL = {"dipole": ["dipole", "charges", "born_charges"], "polarizability": ["polarizability"]}

    def __init__(
        self,
        model: str | Path | Potential | list,
        device: str | torch.device = "cpu",
        dtype=None,
        head: str | None = None,
        backend=None,
        dispersion: str | D3Dispersion | bool | None = None,
        functional: str = "pbe",
        max_memory_gb: float | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.device = check_device(device)
        members = list(model) if isinstance(model, (list, tuple)) else [model]
        members = expand_committees(members)
        if not members:
            raise ValueError("an empty committee: give at least one model")
        self.models = [self._prepared(member, dtype, head, backend) for member in members]
        self.model = self.models[0]
        check_members(self.models)
        self._elements = set(self.model.elements)
        outputs = [tuple(member.outputs) for member in self.models]
        if any(other != outputs[0] for other in outputs):
            raise ValueError(f"committee members predict different outputs {sorted(set(outputs))}; a committee needs the same model.outputs")
        energy = [*type(self).implemented_properties, "hessian"] if "energy" in self.model.outputs else []
        self.implemented_properties = energy + [name for output in self.model.outputs for name in self._TENSORIAL.get(output, [])]
        self.dispersion = self._dispersion(dispersion, functional)
        self.memory_gb = available_memory_gb(self.device) / 2 if max_memory_gb is None else max_memory_gb
        for member in self.models:  # one after another: each may use the whole budget
            member.set_memory_budget(self.memory_gb)

    def _dispersion(self, dispersion, functional: str) -> D3Dispersion | None:
        """The D3 correction asked for, or the one the models record (:mod:`equinet.dispersion`)."""
        if isinstance(dispersion, str) or dispersion is True:
            return D3Dispersion("d3bj" if dispersion is True else dispersion, functional)
        if dispersion is not None:
            return dispersion or None
        recorded = [model.statistics.get("dispersion") for model in self.models]
        if any(settings != recorded[0] for settings in recorded):
            raise ValueError(f"committee members were trained with different D3 corrections subtracted from their labels: {recorded}")
        return None if recorded[0] is None else D3Dispersion(**recorded[0])

    def _prepared(self, model, dtype, head, backend) -> Potential:
        """One model, loaded if a path, in ``dtype`` on the calculator's device, in eval mode."""
        if not isinstance(model, Potential) and Path(model).suffix == ".model":
            model = import_mace(model, head=head)
        elif head is not None:
            raise ValueError(f"head={head!r} selects a head of a mace-torch .model file; {model} has none")
        elif not isinstance(model, Potential):
            model = load_model(model)
        if dtype is not None:
            dtype = DTYPES.get(dtype, dtype)
            if dtype not in DTYPES.values():
                raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
            model = model.to(dtype)
        model = model.to(self.device).eval()
        if backend is not None:
            accelerate(model, **(backend if isinstance(backend, dict) else {"conv": backend, "product": backend}))
        return model

    def atoms_for(self, structure):
        """``ase.Atoms`` of a pymatgen ``Structure``/``Molecule`` (or a copy of ``ase.Atoms``)
        with this calculator attached, ready for ``get_potential_energy()``, optimizers
        and MD::

            atoms = calc.atoms_for(structure)   # pymatgen Structure
            atoms.get_forces()
        """
        if isinstance(structure, Atoms):
            atoms = structure.copy()
        else:
            from pymatgen.io.ase import AseAtomsAdaptor

            atoms = Atoms(AseAtomsAdaptor.get_atoms(structure))  # plain Atoms, without pymatgen's properties
        atoms.calc = self
        return atoms

    def _check_elements(self, atoms) -> None:
        unknown = sorted(set(atoms.numbers.tolist()) - self._elements)
        if unknown:
            names = ", ".join(chemical_symbols[z] for z in unknown)
            known = ", ".join(chemical_symbols[z] for z in sorted(self._elements))
            raise ValueError(f"element {names} is not one the model was built for ({known})")

    def get_hessian(self, atoms: Atoms | None = None) -> np.ndarray:
        """``d²E/dr dr`` ``[3n, 3n]`` in eV/Å² by autograd (:func:`equinet.derivatives.hessian`;
        a committee's mean), also in ``calc.results["hessian"]``."""
        require_energy(self.model)
        return self.get_property("hessian", self._atoms_for_derivatives(atoms))

    def get_born_charges(self, atoms: Atoms | None = None) -> np.ndarray:
        """Born effective charges ``Z[i, a, b] = d mu_a / d r_ib`` ``[n, 3, 3]`` in e by
        autograd (:func:`equinet.derivatives.born_charges`; a committee's mean)."""
        if "dipole" not in self.model.outputs:
            raise ValueError(f"Born charges need a model that predicts dipoles; this one predicts {', '.join(self.model.outputs)} (model.outputs)")
        return self.get_property("born_charges", atoms)

    def get_elastic_tensor(self, atoms: Atoms | None = None, relaxed_ions: bool = True) -> np.ndarray:
        """The elastic tensor ``[6, 6]`` in GPa, Voigt order, by autograd
        (:func:`equinet.derivatives.elastic_tensor`; relax the atoms first; a committee's mean)."""
        atoms = self._atoms_for_derivatives(atoms)
        if self.dispersion is not None:
            raise ValueError("the elastic tensor with D3 dispersion is not available (s-dftd3 gives no strain derivatives of the stress); use a calculator without dispersion")
        return np.mean([elastic_tensor(model, atoms, relaxed_ions) for model in self.models], axis=0)

    def _atoms_for_derivatives(self, atoms: Atoms | None) -> Atoms:
        atoms = self.atoms if atoms is None else atoms
        if atoms is None:
            raise ValueError("give the atoms: calc.get_hessian(atoms)")
        self._check_elements(atoms)
        return atoms

    def check_state(self, atoms, tol=1e-15):
        """ASE's changes since the last calculation, and ``info`` if the total charge or spin
        changed (ASE compares neither)."""
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and any(self.atoms.info.get(key) != atoms.info.get(key) for key in ("charge", "spin")):
            changes.append("info")
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self._check_elements(atoms)
        periodic = bool(atoms.pbc.all())
        batch = Batch.from_data_list([atoms_to_graph(atoms, self.model.cutoff, dtype=self.model.atomic_energies.dtype)]).to(self.device)
        outs = [model(batch, forces=True, stress=periodic) for model in self.models]
        stacked = {key: np.stack([out[key].detach().cpu().double().numpy() for out in outs]) for key in outs[0]}
        self.results = {}
        for key in ("dipole", "polarizability"):
            if key in stacked:
                self.results[key] = stacked[key][:, 0].mean(0)
        if "charges" in stacked:
            self.results["charges"] = stacked["charges"].mean(0)
        if "born_charges" in properties:
            self.results["born_charges"] = np.mean([born_charges(model, atoms) for model in self.models], axis=0)
        if "hessian" in properties:
            dispersion = 0.0 if self.dispersion is None else self.dispersion.hessian(atoms)
            self.results["hessian"] = np.mean([hessian(model, atoms) for model in self.models], axis=0) + dispersion
        if "energy" not in stacked:
            return
        energy = float(stacked["energy"][:, 0].mean())
        self.results.update({
            "energy": energy,
            "free_energy": energy,
            "energies": stacked["node_energy"].mean(0),
            "forces": stacked["forces"].mean(0),
        })  # fmt: skip
        if periodic:
            self.results["stress"] = full_3x3_to_voigt_6_stress(stacked["stress"][:, 0].mean(0))
        if len(self.models) > 1:
            self.results["energy_std"] = float(stacked["energy"][:, 0].std())
            self.results["forces_std"] = np.sqrt(stacked["forces"].var(0).sum(-1))
            self.results["energies_committee"] = stacked["energy"][:, 0]
        if self.dispersion is not None:
            self._add_dispersion(atoms, "energies" in properties)

    def _add_dispersion(self, atoms: Atoms, energies: bool) -> None:
        dispersion = self.dispersion(atoms, energies)
        for key in ("energy", "free_energy", "energies_committee"):
            if key in self.results:
                self.results[key] = self.results[key] + dispersion["energy"]
        self.results["forces"] = self.results["forces"] + dispersion["forces"]
        if "stress" in self.results:
            self.results["stress"] = self.results["stress"] + full_3x3_to_voigt_6_stress(dispersion["stress"])
        if energies:
            self.results["energies"] = self.results["energies"] + dispersion["energies"]
        else:
            del self.results["energies"]
