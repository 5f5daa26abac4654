"""equinet: equivariant machine-learning interatomic potentials.

Sub-packages: :mod:`equinet.ops` (equivariant operators), :mod:`equinet.datasets`
(atomic data as graphs), :mod:`equinet.potentials` (GNN potentials) and
:mod:`equinet.testing` (the conformance checks every operator and model passes).
``equinet.Calculator`` is the ASE calculator; ``equinet.load_model`` and
``equinet.save_model`` read and write deployable ``model.pt`` files;
``equinet.import_mace`` reads a mace-torch ``.model`` file as an equinet model;
``equinet.accelerate`` chooses the backends a model's operators run on;
``equinet.D3Dispersion`` adds Grimme's D3 to a calculator.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

from .conventions import CONVENTIONS

try:
    __version__ = version("equinet")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

# Imported on first use, so that `equinet --help` does not load torch_geometric and ASE.
_LAZY = {
    "Calculator": "equinet.calculator",
    "D3Dispersion": "equinet.dispersion",
    "accelerate": "equinet.potentials.accelerate",
    "import_mace": "equinet.foreign.mace",
    "load_model": "equinet.model_io",
    "save_model": "equinet.model_io",
}

__all__ = ["CONVENTIONS", "Calculator", "D3Dispersion", "__version__", "accelerate", "import_mace", "load_model", "save_model"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'equinet' has no attribute {name!r}")
