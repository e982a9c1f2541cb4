"""Reading a downloaded pickle (ADE20K's `index_ade20k.pkl`) without running its code.

`pickle.load` calls whatever function a pickle names, so a crafted file runs anything. This
unpickler admits only the plain containers and scalars that pickle builds without naming a
function (dict, list, tuple, str, bytes, numbers, None, booleans), the sets and frozensets that
older protocols rebuild by name, and numpy arrays, dtypes and scalars, which are rebuilt by
numpy's own reconstructors from their bytes. Any other name is refused, in one line.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

from ...errors import ZssegError

try:  # numpy >= 2: numpy._core; earlier: numpy.core
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
}


class _Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which is neither a plain container nor a numpy array") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it refers to persistent objects")


def load_restricted(data: bytes, what: str):
    """The object pickled in `data`, built from plain containers and numpy arrays only; `what`
    names the file in the message that refuses anything else."""
    try:
        return _Restricted(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as error:
        raise ZssegError(f"{what} is not a pickle zsseg reads safely: {error} (zsseg never unpickles code)") from None
