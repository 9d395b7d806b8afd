"""Read a PyTorch state dict saved in torch's legacy (pre-1.6, non-zip) format into numpy, without torch.

The format (torch.serialization._legacy_save) is five things one after another in one file: four pickles
(a magic number, a protocol version, the saver's sys_info, the state dict itself) and then, after a pickled
list of storage keys, each storage's raw bytes prefixed by its element count (int64). Inside the state
dict a tensor is `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` and a storage a
persistent id `('storage', torch.FloatStorage, key, location, numel)`. The unpickler below resolves only
those names and OrderedDict: any other global in the file is refused, so a weights file cannot run code.
"""

from __future__ import annotations

import collections
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class TorchPickleError(ValueError):
    """The file is not a legacy-format PyTorch state dict this reader understands."""


class _Storage:
    def __init__(self, dtype: np.dtype, numel: int) -> None:
        self.dtype, self.numel = np.dtype(dtype), numel
        self.data: np.ndarray | None = None


class _TensorRef:
    """A tensor not yet materialised: its storage's bytes come after the pickle that names it."""

    def __init__(
        self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self) -> np.ndarray:
        data = self.storage.data
        assert data is not None
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :], shape=self.size, strides=[s * item for s in self.stride], writeable=False
        )
        return np.array(view)


def _rebuild_tensor_v2(storage: _Storage, offset: int, size: Any, stride: Any, *_: Any) -> _TensorRef:
    return _TensorRef(storage, offset, size, stride)


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, fh: BinaryIO, path: Path, storages: dict[str, _Storage]) -> None:
        super().__init__(fh)
        self.path, self.storages = path, storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        raise TorchPickleError(f"{self.path}: refers to {module}.{name}, which a plain state dict never does")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise TorchPickleError(f"{self.path}: unknown persistent id {pid!r:.80}")
        _, dtype, key, _location, numel = pid[:5]
        return self.storages.setdefault(key, _Storage(dtype, numel))


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Parameter name -> array, as stored (PyTorch's NCHW / OIHW layouts, float32 weights)."""
    storages: dict[str, _Storage] = {}
    try:
        with path.open("rb") as fh:
            if pickle.load(fh) != LEGACY_MAGIC:
                raise TorchPickleError(f"{path}: not a legacy-format PyTorch file (no magic number)")
            if pickle.load(fh) != LEGACY_PROTOCOL:
                raise TorchPickleError(f"{path}: PyTorch serialisation protocol other than {LEGACY_PROTOCOL}")
            sys_info = pickle.load(fh)
            if not sys_info.get("little_endian", False):
                raise TorchPickleError(f"{path}: saved on a big-endian machine")
            state = _StateDictUnpickler(fh, path, storages).load()
            for key in _StateDictUnpickler(fh, path, storages).load():
                storage = storages[key]
                numel = int(np.frombuffer(fh.read(8), "<i8")[0])
                raw = fh.read(numel * storage.dtype.itemsize)
                if numel != storage.numel or len(raw) != numel * storage.dtype.itemsize:
                    raise TorchPickleError(f"{path}: storage {key} is truncated")
                storage.data = np.frombuffer(raw, storage.dtype.newbyteorder("<"))
    except (pickle.UnpicklingError, EOFError, KeyError, IndexError) as err:
        raise TorchPickleError(f"{path}: not a readable PyTorch state dict ({err})") from err
    if not isinstance(state, dict):
        raise TorchPickleError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return {name: value.array() for name, value in state.items() if isinstance(value, _TensorRef)}
