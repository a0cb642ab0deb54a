"""Guard numba's on-disk cache of the kernel against stale helpers.

numba caches a compiled function (``cache=True``) keyed on the source of the file that defines
it, the *entry* module only. The kernel's entry points (:mod:`coinrl.envs.portfolio_kernel`,
:mod:`coinrl.envs.single_kernel`) inline helpers from other modules
(:mod:`coinrl.envs.portfolio_bar`, :mod:`coinrl.envs.portfolio_obs`, :mod:`coinrl.envs.kernel`):
an edit to a helper alone would leave the entry module unchanged, and numba would serve the
machine code of the old helper, silently.

:func:`guard` closes that hole: for functions defined in a guarded directory, numba's cache
locator is wrapped so that the freshness stamp of every cache entry also carries a SHA-256 of
the guarded helper sources. Any change to any of them makes every cached entry point of that
directory stale, and numba compiles it again (and overwrites the entry). Functions elsewhere
keep numba's own locators, untouched. The kernels call :func:`guard` before compiling.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

KERNEL_SOURCES = ("kernel.py", "portfolio_bar.py", "portfolio_obs.py", "portfolio_kernel.py",
                  "single_kernel.py")
"""The modules whose code is compiled into the kernel's entry points (in this directory)."""

_GUARDED: dict[str, tuple[str, ...]] = {}
"""Absolute directory -> the file names whose sources stamp the cache of its functions."""


def sources_digest(directory: str | os.PathLike[str], names: Sequence[str]) -> str:
    """SHA-256 (hex) over the names and bytes of the files ``names`` in ``directory``.

    Raises:
        FileNotFoundError: a named source is missing.
    """
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode() + b"\0")
        h.update((Path(directory) / name).read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def guard(directory: str | os.PathLike[str] | None = None, names: Sequence[str] = KERNEL_SOURCES) -> None:
    """Stamp numba's cache of every function defined in ``directory`` (default: this package's)
    with the digest of the sources ``names`` there (see the module doc). Idempotent; a no-op
    without numba."""
    d = os.path.abspath(Path(__file__).parent if directory is None else directory)
    _GUARDED[d] = tuple(names)
    _install()


@functools.cache
def _install() -> bool:
    """Put the guarding locator first in numba's locator list (once per process)."""
    try:
        from numba.core import caching
    except ImportError:
        return False
    impl: Any = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl")  # noqa: B009 - renamed in numba 0.58
    base: Any = caching._CacheLocator

    class GuardedLocator(base):
        """numba's own locator for the function, its stamp extended by the helpers' digest."""

        def __init__(self, inner: Any, digest: str) -> None:
            self._inner = inner
            self._digest = digest
            self._py_file = inner._py_file

        def ensure_cache_path(self) -> None:
            self._inner.ensure_cache_path()

        def get_cache_path(self) -> str:
            return str(self._inner.get_cache_path())

        def get_source_stamp(self) -> Any:
            return (self._inner.get_source_stamp(), "coinrl-kernel-sources", self._digest)

        def get_disambiguator(self) -> str:
            return str(self._inner.get_disambiguator())

        @classmethod
        def from_function(cls, py_func: Any, py_file: str) -> Any:
            names = _GUARDED.get(os.path.dirname(os.path.abspath(py_file)))
            if names is None:
                return None  # not ours: numba's own locators
            for other in impl._locator_classes:
                if other is cls:
                    continue
                inner = other.from_function(py_func, py_file)
                if inner is not None:
                    return cls(inner, sources_digest(os.path.dirname(os.path.abspath(py_file)), names))
            return None

    impl._locator_classes.insert(0, GuardedLocator)
    logger.debug("numba cache guard installed for %s", sorted(_GUARDED))
    return True
