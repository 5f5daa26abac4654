"""Building the C++ CPU kernels (``backend="cpp"``), compiled on first use by
:func:`torch.utils.cpp_extension.load` (g++ and ninja; about 30 s each, cached afterwards in
torch's extension folder, ``TORCH_EXTENSIONS_DIR``):

* ``gaunt_cpp.cpp`` — the Gaunt sphere-grid product (:mod:`.gaunt`);
* ``so2_cpp.cpp`` — the SO(2) convolution (:mod:`.so2`).

Both run on torch's number of threads with the GIL released. They are not themselves
differentiable: a backward pass that builds a graph (force training) goes through
compositions that autograd can differentiate.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

__all__ = ["load_cpp"]


@functools.cache
def load_cpp(stem: str):
    """The compiled extension module of ``<stem>.cpp`` in this folder.

    Raises:
        RuntimeError: the kernel does not compile here (one line naming what is needed).
    """
    from torch.utils.cpp_extension import load

    source = Path(__file__).with_name(f"{stem}.cpp")
    if shutil.which("ninja") is None:  # torch runs `ninja` from PATH; pip's ninja may sit in an unactivated venv
        try:
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        except ImportError:
            pass  # the build below fails and says so
    try:
        return load(
            name=f"equinet_{stem}",
            sources=[str(source)],
            extra_cflags=["-O3", "-march=native", "-mprefer-vector-width=512"],
            verbose=False,
        )
    except Exception as error:  # compiler, ninja or linker missing or failing: one line, not a build log
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise RuntimeError(
            f"backend='cpp' compiles {source.name} on first use, which failed ({reason}); it needs g++ "
            "and ninja (pip install ninja), or use backend='torch'"
        ) from None
