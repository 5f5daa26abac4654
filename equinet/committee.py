"""Committee files: several models whose mean is the prediction and whose spread is its
uncertainty, named together in one YAML file (``equinet train`` with ``trainer.ensemble: N``
writes one)::

    format: equinet-committee
    members: [member_0/model.pt, member_1/model.pt, member_2/model.pt]   # relative to the file

``equinet.Calculator``, ``equinet md``, ``equinet evaluate``, ``equinet select`` and
``equinet export`` accept such a file wherever they accept a model.
"""

from __future__ import annotations

from pathlib import Path

import yaml

__all__ = ["COMMITTEE_FORMAT", "check_members", "expand_committees", "is_committee_file", "read_committee", "write_committee"]

COMMITTEE_FORMAT = "equinet-committee"


def is_committee_file(path) -> bool:
    """Whether ``path`` names a committee file (by its ``.yaml``/``.yml`` suffix)."""
    return isinstance(path, (str, Path)) and Path(path).suffix in (".yaml", ".yml")


def read_committee(path: str | Path) -> list[Path]:
    """The member model files of the committee file ``path``.

    Raises:
        ValueError: in one line: not a committee file, no members, or a member that is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: committee file not found")
    try:
        content = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a committee file (not YAML: {type(error).__name__})") from None
    if not isinstance(content, dict) or content.get("format") != COMMITTEE_FORMAT:
        raise ValueError(f"{path}: not a committee file (it needs 'format: {COMMITTEE_FORMAT}' and a list of members)")
    members = content.get("members")
    if not isinstance(members, list) or not members or not all(isinstance(member, str) for member in members):
        raise ValueError(f"{path}: 'members' must be a list of model files")
    paths = [path.parent / member for member in members]
    for member in paths:
        if not member.is_file():
            raise ValueError(f"{path}: member {member} not found")
    return paths


def expand_committees(members: list) -> list:
    """``members`` (models, model files and committee files) with each committee file replaced
    by its member files."""
    return [part for member in members for part in (read_committee(member) if is_committee_file(member) else [member])]


def check_members(models: list) -> None:
    """Raises ``ValueError`` in one line unless the models (``Potential``s) share elements
    and cutoff, as the members of a committee must."""
    first = models[0]
    for other in models[1:]:
        if other.elements != first.elements or other.cutoff != first.cutoff:
            raise ValueError(
                f"committee members differ: elements {other.elements} and cutoff {other.cutoff} Å against "
                f"{first.elements} and {first.cutoff} Å; a committee needs the same elements and cutoff"
            )


def write_committee(path: str | Path, members: list[Path]) -> None:
    """Write the committee file ``path`` naming ``members`` (relative to its folder)."""
    from equinet.files import atomic_write

    path = Path(path)
    content = {"format": COMMITTEE_FORMAT, "members": [str(Path(member).relative_to(path.parent)) for member in members]}
    with atomic_write(path) as partial:
        partial.write_text(yaml.safe_dump(content, sort_keys=False))
