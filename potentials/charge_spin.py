"""Each structure's total charge and spin multiplicity as learned node features (the joint
embedding of mace-torch's ``embedding_specs``, as in MACE-OMOL-0).

A structure's total charge ``Q`` (e) and spin multiplicity ``S = 2s + 1`` pick a row of a
learned table each; the rows are joined, mapped linearly (no bias) to the ``C`` node
channels and passed through SiLU:

    h_i = SiLU(W [T_Q[Q + offset_Q] ; T_S[S + offset_S]])       (Q, S of atom i's structure)

``h_i`` is added to atom i's element embedding before the first layer. Either table may be
left out. A structure without a charge or a spin is neutral (``Q = 0``) or a singlet
(``S = 1``), as in mace-torch.
"""

from __future__ import annotations

import torch

__all__ = ["ChargeSpinEmbedding", "STRUCTURE_DEFAULTS", "check_table"]

#: The value a structure without it has, by batch field (mace-torch's defaults).
STRUCTURE_DEFAULTS = {"total_charge": 0.0, "total_spin": 1.0}
_WHAT = {"total_charge": "total charge", "total_spin": "spin multiplicity"}
_TABLE_KEYS = ("classes", "offset", "dim")


def check_table(key: str, table: dict, default: float) -> dict:
    """A table's settings ``{"classes": K, "offset": o, "dim": d}`` from the config
    ``model.<key>``, checked: whole numbers, K and d positive, and a row for the value
    ``default`` that a structure without one gets. One-line ValueError otherwise."""
    if not isinstance(table, dict) or set(table) != set(_TABLE_KEYS):
        raise ValueError(f"model.{key} must be {{classes: K, offset: o, dim: d}}, got {table!r}")
    if not all(isinstance(table[name], int) and not isinstance(table[name], bool) for name in _TABLE_KEYS):
        raise ValueError(f"model.{key} takes whole numbers for classes, offset and dim, got {table!r}")
    if table["classes"] < 1 or table["dim"] < 1:
        raise ValueError(f"model.{key}: classes and dim must be 1 or more, got {table!r}")
    if not 0 <= default + table["offset"] < table["classes"]:
        raise ValueError(
            f"model.{key}: values {-table['offset']} to {table['classes'] - 1 - table['offset']} leave out {default:g}, "
            "the value of a structure that gives none; change offset or classes"
        )
    return {name: table[name] for name in _TABLE_KEYS}


class ChargeSpinEmbedding(torch.nn.Module):
    """Node features ``[n, C]`` from the total charge and spin multiplicity of each atom's
    structure (module docstring).

    Args:
        channels: C, the scalar channels of the node features.
        charge, spin: the tables (:func:`check_table`): row ``value + offset`` of ``classes``
            rows of ``dim`` learned numbers, for the values ``-offset`` to
            ``classes - 1 - offset``; ``None`` leaves the table out (not both).

    Call: ``embedding(total_charge [n], total_spin [n], like [n, ...])`` → ``[n, C]``: the
    values of each atom's structure, whole numbers (``None``: every structure is neutral, or
    a singlet); ``like`` gives the number of atoms, dtype and device. A value outside its
    table or not a whole number is a one-line ValueError.
    """

    def __init__(self, channels: int, charge: dict | None = None, spin: dict | None = None):
        super().__init__()
        self.settings = {field: table for field, table in (("total_charge", charge), ("total_spin", spin)) if table is not None}
        if not self.settings:
            raise ValueError("ChargeSpinEmbedding needs a charge table, a spin table or both")
        self.charge = None if charge is None else torch.nn.Embedding(charge["classes"], charge["dim"])
        self.spin = None if spin is None else torch.nn.Embedding(spin["classes"], spin["dim"])
        self.project = torch.nn.Linear(sum(table["dim"] for table in self.settings.values()), channels, bias=False)

    def _rows(self, field: str, table: torch.nn.Embedding, values: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        if values is None:
            values = like.new_full(like.shape[:1], STRUCTURE_DEFAULTS[field])
        index = values + self.settings[field]["offset"]
        bad = (index != index.round()) | (index < 0) | (index >= table.num_embeddings)
        if bad.any():
            value, offset = float(values[bad][0]), self.settings[field]["offset"]
            problem = "is not a whole number" if value != round(value) else f"is outside the model's {-offset} to {table.num_embeddings - 1 - offset}"
            raise ValueError(f"a {_WHAT[field]} of {value:g} {problem}")
        return table(index.long())

    def forward(self, total_charge: torch.Tensor | None, total_spin: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        rows = []
        if self.charge is not None:
            rows.append(self._rows("total_charge", self.charge, total_charge, like))
        if self.spin is not None:
            rows.append(self._rows("total_spin", self.spin, total_spin, like))
        return torch.nn.functional.silu(self.project(torch.cat(rows, dim=-1)))
