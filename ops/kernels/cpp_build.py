"""The C++ CPU kernels (``backend="cpp"``), compiled on first use by
:func:`torch.utils.cpp_extension.load` (g++ and ninja; about 30 s each, cached afterwards in
torch's extension folder, ``TORCH_EXTENSIONS_DIR``):

* ``gaunt_cpp.cpp`` — the Gaunt sphere-grid product of
  :class:`~equinet.ops.GauntTensorProduct`. Per sample, it reads the features in e3nn's layout
  through index tables, takes four channels at a time to the northern half of the grid
  (mirror-even and mirror-odd parts, as the torch path does), multiplies pairs of them
  pointwise, projects back and writes e3nn's layout, so no grid value and no permuted copy of
  a feature ever reaches memory. The same kernel, with other tables, gives the gradients in
  one pass (see :class:`~equinet.ops.gaunt._GauntProduct`).
* ``so2_cpp.cpp`` — the SO(2) convolution of :class:`~equinet.ops.SO2Convolution`. Per edge,
  it gathers the sender's features, rotates them into the edge frame, applies the SO(2) map
  with the edge's weights, rotates back and adds the message to the receiver; the backward
  pass makes the gradients of the features, Wigner entries and weights in one sweep (see
  :class:`~equinet.ops.so2._SO2Kernel`).

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
