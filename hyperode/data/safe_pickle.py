"""A restricted unpickler for data files: it can rebuild numpy arrays and nothing else.

``pickle.load`` on a file from elsewhere can run arbitrary code: a pickle names
callables (by module and name) and calls them. ``SafeUnpickler.find_class`` is the
single place where a pickle obtains a callable, and it hands out only:

* ``numpy.ndarray``, ``numpy.dtype`` and numpy's array reconstructors
  (``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``
  for protocols <= 4, ``numpy.core.numeric._frombuffer`` /
  ``numpy._core.numeric._frombuffer`` for protocol 5), under both the numpy 1 and
  numpy 2 module names;
* ``_codecs.encode``, but only as ``encode(text, "latin1")``: Python 3 writes
  ``bytes`` objects this way at protocols 0-2 (protocol 2 CIFAR-style files written
  by Python 3 need it); any other codec is refused.

Every other global -- ``os.system``, ``builtins.eval``, other numpy functions,
``copyreg`` tricks -- raises ``UnsafePickleError`` before anything is imported or
called. The objects are resolved here, not imported by name, so a refused or even
an allowed name never triggers an import.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global that data files never need."""


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    if encoding not in ("latin1", "latin-1") or errors != "strict":
        raise UnsafePickleError(f"refusing _codecs.encode with encoding={encoding!r}, "
                                f"errors={errors!r}; only 'latin1' is allowed")
    if not isinstance(text, str):
        raise UnsafePickleError(f"refusing _codecs.encode of a {type(text).__name__}")
    return codecs.encode(text, "latin1")


_RECONSTRUCT = _multiarray._reconstruct
_FROMBUFFER = _numeric._frombuffer  # pyright: ignore[reportAttributeAccessIssue]

#: (module, name) -> the object handed to the pickle.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("_codecs", "encode"): _latin1_encode,
}


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` allows only ``ALLOWED_GLOBALS``.

    Args:
        file: binary file object.
        source: name used in error messages (e.g. the path).
        encoding: how Python 2 ``str`` objects are decoded; ``"bytes"`` keeps them as
            ``bytes`` (CIFAR-10's dict keys are ``b"data"``, ``b"labels"``).
    """

    def __init__(self, file: io.BufferedIOBase, *, source: str = "<pickle>",
                 encoding: str = "bytes") -> None:
        super().__init__(file, encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refusing to load global {module}.{name}: only numpy array "
                f"data is allowed in this file (it may be corrupt or malicious)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: refusing persistent id {pid!r}")


def safe_load(path: str | Path) -> Any:
    """Unpickle ``path`` with ``SafeUnpickler``.

    Raises ``UnsafePickleError`` (a ``pickle.UnpicklingError``) for a forbidden
    global and ``ValueError`` naming the file when it is not a valid pickle.
    """
    path = Path(path)
    with path.open("rb") as f:
        try:
            return SafeUnpickler(f, source=str(path)).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                IndexError, KeyError, MemoryError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not a valid pickle ({type(err).__name__}: {err})") from err
