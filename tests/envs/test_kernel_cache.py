"""numba's on-disk cache never serves a kernel compiled from an older helper module."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from coinrl.envs import kernel_cache

HELPER = """from numba.extending import register_jitable


@register_jitable
def value():
    return {value}
"""

ENTRY = """import os
import sys

from numba import njit

sys.path.insert(0, os.path.dirname(__file__))
from helper import value  # noqa: E402

if os.environ.get("GUARD") == "1":
    from coinrl.envs import kernel_cache

    kernel_cache.guard(os.path.dirname(__file__), ("helper.py", "entry.py"))


@njit(cache=True)
def f():
    return value()
"""


def _run(folder: Path, guarded: bool) -> int:
    env = {**os.environ, "GUARD": "1" if guarded else "0"}
    code = "import sys; sys.path.insert(0, sys.argv[1]); import entry; print(entry.f())"
    out = subprocess.run([sys.executable, "-c", code, str(folder)], check=True, capture_output=True,
                         text=True, env=env)
    return int(out.stdout.split()[-1])


def _package(folder: Path, value: int) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "entry.py").write_text(ENTRY)
    (folder / "helper.py").write_text(HELPER.format(value=value))
    return folder


def test_the_kernel_digest_covers_every_compiled_module(tmp_path: Path) -> None:
    here = Path(kernel_cache.__file__).parent
    for name in kernel_cache.KERNEL_SOURCES:
        (tmp_path / name).write_bytes((here / name).read_bytes())
    before = kernel_cache.sources_digest(tmp_path, kernel_cache.KERNEL_SOURCES)
    for name in ("portfolio_bar.py", "portfolio_obs.py", "kernel.py"):
        path = tmp_path / name
        src = path.read_bytes()
        path.write_bytes(src + b"\n# an edit\n")
        assert kernel_cache.sources_digest(tmp_path, kernel_cache.KERNEL_SOURCES) != before, name
        path.write_bytes(src)
    assert kernel_cache.sources_digest(tmp_path, kernel_cache.KERNEL_SOURCES) == before


@pytest.mark.slow
def test_an_edited_helper_module_is_compiled_again_not_served_from_the_cache(tmp_path: Path) -> None:
    """numba alone serves the stale helper (the hole, shown on an unguarded copy); guarded, the
    edit to the helper module is compiled in."""
    plain = _package(tmp_path / "plain", 1)
    guarded = _package(tmp_path / "guarded", 1)
    assert _run(plain, guarded=False) == 1
    assert _run(guarded, guarded=True) == 1
    for folder in (plain, guarded):
        (folder / "helper.py").write_text(HELPER.format(value=2))
    assert _run(plain, guarded=False) == 1  # numba's own key: only entry.py, unchanged
    assert _run(guarded, guarded=True) == 2
    assert _run(guarded, guarded=True) == 2  # and cached again under the new stamp


def test_the_kernel_entry_points_are_stamped_with_every_kernel_source() -> None:
    pytest.importorskip("numba")
    from numba.core import caching

    from coinrl.envs import kernel, single_kernel

    kernel.register()  # what every kernel does before compiling
    impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl
    for fn in (single_kernel.env_step_at, single_kernel.vec_step):
        loc = impl._locator_classes[0].from_function(fn, single_kernel.__file__)
        digest = kernel_cache.sources_digest(Path(single_kernel.__file__).parent, kernel_cache.KERNEL_SOURCES)
        assert loc.get_source_stamp()[-1] == digest
