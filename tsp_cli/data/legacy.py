"""Reading the reference extractor's ``.pkl`` feature files without trusting them.

The reference scripts saved each video's features with ``pickle.dump(np.stack(rows))``. A pickle
can run any code when loaded, so a plain ``pickle.load`` of a downloaded or shared folder would
let any file in it take over the machine. The unpickler here resolves only the few NumPy names
that an array needs (under their NumPy 1 and NumPy 2 module paths), plus ``_codecs.encode``
restricted to latin-1 (how protocols 0-2 store raw bytes), and refuses every other global
before anything is called; the result must then be a 2-D float array.
"""

from __future__ import annotations

import codecs
import importlib
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tsp_cli.errors import UnsafePickleError


def _numpy_internal(attribute: str, *modules: str) -> Any:
    """The object that NumPy pickles reference, from whichever module path this NumPy has."""
    for module in modules:
        try:
            return getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"NumPy has no {attribute} in {', '.join(modules)}")


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """``_codecs.encode`` as pickle protocols 0-2 use it for raw bytes, limited to latin-1."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


def _allowed_globals() -> dict[tuple[str, str], Callable[..., Any] | type]:
    reconstruct = _numpy_internal("_reconstruct", "numpy._core.multiarray", "numpy.core.multiarray")
    frombuffer = _numpy_internal("_frombuffer", "numpy._core.numeric", "numpy.core.numeric")
    return {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy.core.numeric", "_frombuffer"): frombuffer,
        ("numpy._core.numeric", "_frombuffer"): frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_bytes,
    }


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """An unpickler whose only reachable callables are those that rebuild a NumPy array."""

    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a NumPy array") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent references are not part of a NumPy array")


def load_legacy_features(path: Path) -> np.ndarray:
    """The 2-D float array stored in a reference ``.pkl`` file, or :class:`UnsafePickleError`."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            result = _ArrayOnlyUnpickler(file).load()
    except Exception as error:  # any failure to rebuild an array means the file is refused
        raise UnsafePickleError(
            f"{path} was refused: it is not a plain NumPy feature array ({error}), and nothing in it was run.",
            path=path,
        ) from None
    if not (isinstance(result, np.ndarray) and result.ndim == 2 and result.dtype.kind == "f"):
        described = (
            f"a {result.ndim}-D {result.dtype} array" if isinstance(result, np.ndarray) else type(result).__name__
        )
        raise UnsafePickleError(f"{path} was refused: it holds {described}, not a 2-D float feature array.", path=path)
    return result
