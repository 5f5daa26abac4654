"""equinet: equivariant machine-learning interatomic potentials.

Sub-packages: :mod:`equinet.ops` (equivariant operators), :mod:`equinet.datasets`
(atomic data as graphs), :mod:`equinet.potentials` (GNN potentials) and
:mod:`equinet.testing` (the conformance checks every operator and model passes).
"""

from importlib.metadata import PackageNotFoundError, version

from .conventions import CONVENTIONS

try:
    __version__ = version("equinet")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["CONVENTIONS", "__version__"]
