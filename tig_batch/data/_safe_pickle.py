"""Load a Python pickle that may hold only plain containers and numpy arrays.

CIFAR's "python version" ships as pickles, and unpickling runs whatever callable the file
names. This loader allows only the handful of numpy globals that rebuild an array; any
other global (``os.system``, ``builtins.eval``, a class with ``__reduce__``) is refused
before it is called.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from tig_batch.errors import DataError

_MULTIARRAY = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # type: ignore[attr-defined]
_NUMERIC = np._core.numeric if hasattr(np, "_core") else np.core.numeric  # type: ignore[attr-defined]

# (module, name) -> the object to use. numpy 1 pickles say ``numpy.core``, numpy 2 pickles
# ``numpy._core``; both resolve to the same functions without importing the old shim.
_ALLOWED: dict[tuple[str, str], Any] = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = _MULTIARRAY._reconstruct
    _ALLOWED[(_mod, "scalar")] = _MULTIARRAY.scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_mod, "_frombuffer")] = _NUMERIC._frombuffer
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("_codecs", "encode")] = lambda text, encoding="utf-8": _latin1(text, encoding)
_ALLOWED[("numpy", "dtype")] = np.dtype


def _latin1(text: str, encoding: str) -> bytes:
    """Python 3 protocol-2 pickles spell bytes as ``_codecs.encode(str, "latin1")``."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused to load {module}.{name}: only plain containers and numpy arrays "
                "are allowed"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused a persistent reference")


def _check_plain(obj: Any, depth: int = 0) -> None:
    if depth > 16:
        raise pickle.UnpicklingError("nesting too deep")
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise pickle.UnpicklingError("refused a numpy array of Python objects")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _check_plain(key, depth + 1)
            _check_plain(value, depth + 1)
    elif isinstance(obj, list | tuple):
        for value in obj:
            _check_plain(value, depth + 1)
    elif not isinstance(obj, str | bytes | int | float | bool | type(None) | np.generic):
        raise pickle.UnpicklingError(f"refused an object of type {type(obj).__name__}")


def safe_load_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` allowing only dicts, lists, tuples, scalars, strings and arrays.

    Python 2 pickles (CIFAR's) are read with ``encoding="bytes"``, so their dict keys come
    back as bytes. Raises :class:`DataError` naming the file when anything else appears.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
        _check_plain(obj)
    except pickle.UnpicklingError as exc:
        raise DataError(f"{path}: unsafe or invalid pickle: {exc}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise DataError(f"{path}: not a valid pickle (truncated?): {exc}") from None
    return obj
