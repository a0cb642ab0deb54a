"""The stages import one way: pipeline → envs → agents → live, experiments on top.

Every module of every package is parsed (not imported), so a late, lazy import inside a
function is caught as well as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["pipeline", "envs", "agents", "live", "experiments"]
ALLOWED = {stage: set(ORDER[: i + 1]) for i, stage in enumerate(ORDER)}


def _imported_stages(path: Path) -> set[str]:
    stages: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "coinrl" and len(parts) > 1:
                stages.add(parts[1])
            elif parts[0] in ORDER:  # a bare top-level import of our folders is wrong anyway
                stages.add(f"bare:{parts[0]}")
    return stages


@pytest.mark.parametrize("stage", ORDER)
def test_each_stage_imports_only_the_stages_before_it(stage: str) -> None:
    files = sorted((ROOT / stage).rglob("*.py"))
    assert files, f"no modules found under {stage}/"
    bad = {
        str(f.relative_to(ROOT)): sorted(s for s in _imported_stages(f) if s not in ALLOWED[stage])
        for f in files
    }
    assert {f: s for f, s in bad.items() if s} == {}


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    mod = tmp_path / "m.py"
    mod.write_text("def f():\n    from coinrl.live.runner import Runner\n    import envs\n")
    assert _imported_stages(mod) == {"live", "bare:envs"}
