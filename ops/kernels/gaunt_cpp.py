"""The Gaunt sphere-grid product as one fused C++ CPU kernel (``backend="cpp"`` of
:class:`~equinet.ops.GauntTensorProduct`), compiled on first use by
:func:`torch.utils.cpp_extension.load` (g++ and ninja; about 30 s, cached afterwards in
torch's extension folder, ``TORCH_EXTENSIONS_DIR``).

Per sample, the kernel reads the features in e3nn's layout through index tables, takes four
channels at a time to the northern half of the grid (mirror-even and mirror-odd parts, as the
torch path does), multiplies pairs of them pointwise, projects back and writes e3nn's layout, so
no grid value and no permuted copy of a feature ever reaches memory. It runs on torch's number
of threads. The same kernel, with other tables, gives the gradients in one pass (see
:class:`~equinet.ops.gaunt._GauntProduct`); it is not itself differentiable, so a backward pass
that builds a graph goes through compositions of it.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

__all__ = ["gaunt_cpp"]


@functools.cache
def gaunt_cpp():
    """The compiled extension module (its function ``gaunt_product``).

    Raises:
        RuntimeError: the kernel does not compile here (one line naming what is needed).
    """
    from torch.utils.cpp_extension import load

    source = Path(__file__).with_suffix(".cpp")
    if shutil.which("ninja") is None:  # torch runs `ninja` from PATH; pip's ninja may sit in an unactivated venv
        try:
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        except ImportError:
            pass  # the build below fails and says so
    try:
        return load(
            name="equinet_gaunt_cpp",
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
