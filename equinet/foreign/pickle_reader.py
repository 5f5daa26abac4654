"""Reading a file that ``torch.save`` wrote without running its pickle.

A ``torch.save`` file is a zip archive: ``<name>/data.pkl`` (a pickle) and the raw bytes
of every tensor storage (``<name>/data/<key>``). Unpickling it with ``pickle`` or
``torch.load(weights_only=False)`` imports the classes it names and calls whatever
its opcodes ask for, so a file can run any code. :func:`read_torch_pickle` reads it with
an unpickler that imports nothing and calls only:

* torch's tensor, parameter and storage rebuilds, re-implemented here on the stored bytes;
* plain containers and values (``OrderedDict``, ``set``, bytes, torch dtypes).

Every other class becomes a :class:`Record`, an inert object that keeps its qualified
name, the arguments it was created with and its pickled state (for a ``torch.nn.Module``,
its ``__dict__`` with ``_parameters``, ``_buffers`` and ``_modules``). A pickle that asks
to *call* anything else (``os.system`` through ``__reduce__``, say) is refused, except for
the few foreign calls listed in :data:`RECORDED_CALLS`, which only describe an object
and become records of their arguments.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

__all__ = ["RECORDED_CALLS", "Record", "read_torch_pickle"]

_DTYPES = {
    name: getattr(torch, name)
    for name in ("float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool", "complex64", "complex128")
}
_STORAGES = {
    "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16, "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64, "CharStorage": torch.int8, "ShortStorage": torch.int16, "IntStorage": torch.int32,
    "LongStorage": torch.int64, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}  # fmt: skip
#: Calls a pickle may ask for that only describe an object (here: torch.fx modules, rebuilt
#: from their Python source); they become records of their arguments and are never run.
RECORDED_CALLS = frozenset({"torch.fx.graph_module.reduce_graph_module"})


class UnsafePickle(pickle.UnpicklingError):
    """The pickle asks to call something that is not known to be safe."""


class _RecordType(type):
    # Pickles make instances with NEWOBJ (``cls.__new__``); *calling* a class they name
    # would mean running its constructor, which a record never does.
    def __call__(cls, *args, **kwargs):
        raise UnsafePickle(f"its pickle calls {cls.qualname}, which would run code")


class Record(metaclass=_RecordType):
    """An object of a class that was not imported.

    Attributes:
        qualname: the class's module and name (``"mace.modules.models.ScaleShiftMACE"``).
        args: the arguments it was created with (``Irreps``, ``Irrep``: the tuple itself).
        state: its pickled state (a module's ``__dict__``), ``None`` if it had none.
    """

    qualname = "Record"

    def __new__(cls, *args):
        record = object.__new__(cls)
        record.args, record.state = args, None
        return record

    def __setstate__(self, state):
        self.state = state

    @property
    def name(self) -> str:
        """The class name without its module (``"ScaleShiftMACE"``)."""
        return self.qualname.rsplit(".", 1)[-1]

    def get(self, key: str, default=None):
        """Attribute ``key`` of the pickled object: from its state, or its submodule,
        parameter or buffer of that name (as ``getattr`` finds them on a module)."""
        state = self.state if isinstance(self.state, dict) else {}
        for where in (state, state.get("_modules", {}), state.get("_parameters", {}), state.get("_buffers", {})):
            if key in where:
                return where[key]
        return default

    def children(self) -> dict[str, Any]:
        """A module's submodules by name (records, or ``None`` where torch holds none)."""
        state = self.state if isinstance(self.state, dict) else {}
        return dict(state.get("_modules", {}))

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """A module's parameters and buffers, its submodules' included, by dotted name
        (as ``Module.state_dict``, with non-persistent buffers too)."""
        state = self.state if isinstance(self.state, dict) else {}
        out = {}
        for group in ("_parameters", "_buffers"):
            for key, value in state.get(group, {}).items():
                if isinstance(value, torch.Tensor):
                    out[prefix + key] = value
        for key, child in self.children().items():
            if isinstance(child, Record):
                out.update(child.tensors(f"{prefix}{key}."))
        return out

    def __repr__(self) -> str:
        return f"Record({self.qualname})"


_record_types: dict[str, type[Record]] = {}


def _record_type(qualname: str) -> type[Record]:
    if qualname not in _record_types:
        _record_types[qualname] = _RecordType(qualname.rsplit(".", 1)[-1], (Record,), {"qualname": qualname})
    return _record_types[qualname]


def _recorded_call(qualname: str):
    def call(*args):
        return Record.__new__(_record_type(qualname), *args)

    return call


class _StorageType:
    """What ``torch.<X>Storage`` stands for in a pickle: the dtype of a stored storage."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError("a tensor without stored data")
    return storage.as_strided(tuple(size), tuple(stride), int(storage_offset)).clone()


def _rebuild_parameter(data, requires_grad=True, backward_hooks=None, state=None):
    return data


def _encode(text: str, encoding: str = "latin1") -> bytes:
    # Protocol 2 pickles bytes as _codecs.encode(text, "latin1").
    if encoding != "latin1":
        raise UnsafePickle(f"its pickle encodes bytes as {encoding!r}")
    return text.encode("latin1")


_ALLOWED = {
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "collections.OrderedDict": collections.OrderedDict,
    "builtins.set": set,
    "__builtin__.set": set,
    "builtins.frozenset": frozenset,
    "__builtin__.frozenset": frozenset,
    "_codecs.encode": _encode,
    **{f"torch.{name}": dtype for name, dtype in _DTYPES.items()},
    **{f"torch.{name}": _StorageType(dtype) for name, dtype in _STORAGES.items()},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, folder: str):
        super().__init__(io.BytesIO(data))
        self._archive, self._folder = archive, folder
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str):
        qualname = f"{module}.{name}"
        if qualname in _ALLOWED:
            return _ALLOWED[qualname]
        if qualname in RECORDED_CALLS:
            return _recorded_call(qualname)
        return _record_type(qualname)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unknown persistent id {str(pid)[:80]}")
        _, storage_type, key, _location, numel = pid
        if key not in self._storages:
            dtype = storage_type.dtype
            raw = self._archive.read(f"{self._folder}data/{key}")
            itemsize = torch.empty(0, dtype=dtype).element_size()
            if len(raw) != numel * itemsize:
                raise pickle.UnpicklingError(f"storage {key} has {len(raw)} bytes, not {numel} x {itemsize}")
            self._storages[key] = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        return self._storages[key]


def read_torch_pickle(path: str | Path) -> Any:
    """The object that ``torch.save`` wrote to ``path``, read without running its pickle.

    Returns:
        Plain data, tensors (on the CPU, in their stored dtype) and :class:`Record` s in
        place of every other object.

    Raises:
        FileNotFoundError: no such file.
        ValueError: in one line naming the file: not a ``torch.save`` zip file, a truncated
            or damaged one, or a pickle that asks to call code (nothing is run).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a file that torch.save wrote (no zip archive); give a model file such as MACE's .model")
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("data.pkl") and name.count("/") <= 1]
            if len(pickles) != 1:
                raise ValueError(f"{path}: a zip archive but not one that torch.save wrote (no data.pkl)")
            folder = pickles[0][: -len("data.pkl")]
            if folder + "byteorder" in archive.namelist() and archive.read(folder + "byteorder") != b"little":
                raise ValueError(f"{path}: stored big-endian, which equinet does not read")
            return _Unpickler(archive.read(pickles[0]), archive, folder).load()
    except UnsafePickle as error:
        raise ValueError(f"{path}: refused: {error}; nothing in the file was run") from None
    except (pickle.UnpicklingError, zipfile.BadZipFile, zlib.error, EOFError, KeyError, RuntimeError, TypeError, AttributeError, IndexError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{path}: truncated or damaged ({reason})") from None
