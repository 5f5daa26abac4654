"""Building the C++ CPU kernels (``backend="cpp"``), compiled on first use by
:func:`torch.utils.cpp_extension.load` into one extension (g++ and ninja; ninja compiles its
sources side by side, about 30 s on 2 cores; cached afterwards in torch's extension folder,
``TORCH_EXTENSIONS_DIR``):

* ``gaunt_cpp.cpp`` — the Gaunt sphere-grid product (:mod:`.gaunt`);
* ``so2_cpp.cpp`` — the SO(2) convolution (:mod:`.so2`);
* ``bindings.cpp`` — their Python functions.

Both kernels run on torch's number of threads with the GIL released. They are not themselves
differentiable: a backward pass that builds a graph (force training) goes through
compositions that autograd can differentiate.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

__all__ = ["load_cpp"]

SOURCES = ("gaunt_cpp.cpp", "so2_cpp.cpp", "bindings.cpp")


@functools.cache
def load_cpp():
    """The compiled extension module of the kernels (:data:`SOURCES`, in this folder).

    Raises:
        RuntimeError: the kernels do not compile here (one line naming what is needed).
    """
    from torch.utils.cpp_extension import load

    folder = Path(__file__).parent
    if shutil.which("ninja") is None:  # torch runs `ninja` from PATH; pip's ninja may sit in an unactivated venv
        try:
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        except ImportError:
            pass  # the build below fails and says so
    try:
        return load(
            name="equinet_cpu_kernels",
            sources=[str(folder / source) for source in SOURCES],
            extra_cflags=["-O3", "-march=native", "-mprefer-vector-width=512"],
            verbose=False,
        )
    except Exception as error:  # compiler, ninja or linker missing or failing: one line, not a build log
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise RuntimeError(
            f"backend='cpp' compiles the C++ CPU kernels ({', '.join(SOURCES)}) on first use, which failed ({reason}); "
            "it needs g++ and ninja (pip install ninja), or use backend='torch'"
        ) from None
