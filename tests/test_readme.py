"""Every ``coinrl`` command in the README parses, validates its config, and is run by a test.

* :func:`test_every_readme_command_parses_and_its_config_loads`: each command goes through the
  real CLI's argument parser, and a command taking an experiment YAML loads it with the
  README's overrides (this is what caught ``batch_size 2048 > n_steps * n_envs = 1024``).
* :func:`test_readme_commands_run_as_written`: the commands run, in the README's order (data
  first, since other commands read what it stores), through the installed console script in a
  scratch folder. Appended options only shrink budgets (a later option wins) or point at the
  offline exchange emulator instead of binance.com; the few commands that cannot run here
  (real orders, a remote PostgreSQL) are listed in :data:`NOT_RUN_HERE` with the test that runs
  their flow, and every README command must be either run or listed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command

from coinrl.experiments.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
COINRL = str(Path(sys.executable).with_name("coinrl"))
CONFIG_COMMANDS = {"train", "walkforward", "tune", "tune-best"}

SMALL_TRAIN = [
    "train.total_timesteps=2048", "train.eval_every_steps=2048", "train.checkpoint_every_steps=2048",
    "train.progress_bar=false", "tracking.mode=disabled",
]
# command prefix -> options appended (they only shrink budgets or point at the emulator)
APPEND: dict[tuple[str, ...], list[str]] = {
    ("quickstart",): ["--timesteps", "2048"],
    ("train",): SMALL_TRAIN,
    ("walkforward",): [*SMALL_TRAIN, "--folds", "2", "--seeds", "1", "--no-track"],
    ("tune",): [*SMALL_TRAIN, "tune.n_trials=2", "tune.folds=1", "--n-jobs", "1"],
    ("backtest",): ["--no-track"],
    ("data", "fetch"): ["--exchange-url", "{emulator}"],
    ("data", "update"): ["--exchange-url", "{emulator}", "--max-runs", "1"],
}
# README commands that this test does not run, why, and the test that runs their flow
NOT_RUN_HERE: dict[tuple[str, ...], str] = {
    ("live",): "real orders on a real exchange; tests/experiments/test_live_cmd.py runs live against the emulator",
    ("tune", "--no-best"): "a remote PostgreSQL server; tests/agents/test_tune_postgres.py runs it on a local one",
    ("tune-best",): "a remote PostgreSQL server; tests/agents/test_tune_postgres.py runs it on a local one",
    ("bundle", "migrate"): "a bundle written by coinrl before bundle format 2; tests/agents/test_bundle*.py migrate one",
}


def readme_commands(text: str | None = None) -> list[list[str]]:
    """The ``coinrl`` commands of the README's bash blocks, as argument lists (no ``coinrl``)."""
    text = README.read_text(encoding="utf-8") if text is None else text
    out: list[list[str]] = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words and words[-1] == "&":
                    words = words[:-1]
                if words[:1] == ["coinrl"]:
                    out.append(words[1:])
    return out


def _matches(args: list[str], prefix: tuple[str, ...]) -> bool:
    return args[: 1] == [prefix[0]] and all(p in args for p in prefix[1:])


def _not_run_reason(args: list[str]) -> str | None:
    return next((why for prefix, why in NOT_RUN_HERE.items() if _matches(args, prefix)), None)


def _parse(args: list[str]) -> tuple[str, dict[str, object]]:
    """Resolve ``args`` through the CLI's click groups; the leaf command's name and params."""
    cmd: Any = get_command(app)  # typer's own (vendored) click types
    ctx = cmd.make_context("coinrl", list(args))
    while hasattr(cmd, "resolve_command"):  # a group: descend into the subcommand
        rest = [*getattr(ctx, "_protected_args", getattr(ctx, "protected_args", [])), *ctx.args]
        name, sub, rest = cmd.resolve_command(ctx, rest)
        assert sub is not None, f"no command {name!r}"
        cmd = sub
        ctx = cmd.make_context(str(name), rest, parent=ctx)
    return str(cmd.name), dict(ctx.params)


def test_the_readme_lists_commands_of_every_kind() -> None:
    cmds = readme_commands()
    assert len(cmds) >= 20
    firsts = {c[0] for c in cmds}
    assert {"quickstart", "train", "evaluate", "backtest", "data", "paper", "status"} <= firsts


@pytest.mark.slow
def test_every_readme_command_parses_and_its_config_loads() -> None:
    from coinrl.experiments.config import load_experiment_config

    for args in readme_commands():
        name, params = _parse(args)
        if name in CONFIG_COMMANDS:
            overrides = [str(o) for o in (params.get("overrides") or [])]
            load_experiment_config(ROOT / str(params["config"]), overrides)  # raises ConfigError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.timeout(3600)  # many commands in a row; each has its own limit
def test_readme_commands_run_as_written(tmp_path: Path, emulator: object) -> None:
    work = tmp_path / "work"
    work.mkdir()
    for name in ("experiments", "pipeline"):  # README paths are relative to the repository root
        (work / name).symlink_to(ROOT / name)
    (tmp_path / "shared").symlink_to(ROOT.parent / "shared")  # ../shared/data
    url = emulator.base_url  # type: ignore[attr-defined]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true", "COLUMNS": "200",
           "WANDB_DIR": str(tmp_path / "wandb_home"), "WANDB_CONFIG_DIR": str(tmp_path / "wandb_home")}
    cmds = readme_commands()
    order = sorted(range(len(cmds)), key=lambda i: (cmds[i][0] != "data", i))  # data first
    port = str(_free_port())
    background: list[subprocess.Popen[str]] = []
    ran = 0
    try:
        for i in order:
            args = [a.replace("8799", port) for a in cmds[i]]
            if _not_run_reason(args):
                continue
            extra = next((x for p, x in APPEND.items() if _matches(args, p)), [])
            argv = [COINRL, *args, *(x.format(emulator=url) for x in extra)]
            if args[:2] == ["emulator", "serve"]:  # a server: start it, wait until it listens
                paper_server = "8799" in cmds[i]  # the paper flow's exchange: keep it running
                if not paper_server:
                    argv += ["--port", str(_free_port())]
                proc = subprocess.Popen(argv, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
                background.append(proc)
                assert proc.stdout is not None
                seen = ""
                while "listening" not in seen and proc.poll() is None:
                    seen += proc.stdout.readline()
                assert "listening" in seen, (argv, seen)
                if not paper_server:
                    proc.terminate()
                    proc.wait(timeout=30)
                ran += 1
                continue
            t0 = time.monotonic()
            res = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=900, check=False)
            assert res.returncode == 0, (
                f"README command failed ({time.monotonic() - t0:.0f} s): {shlex.join(argv)}\n"
                f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
            )
            ran += 1
    finally:
        for proc in background:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
    assert ran + sum(1 for c in cmds if _not_run_reason(c)) == len(cmds)
    assert (work / "runs" / "ppo_btc_1h" / "bundle").is_dir()
    assert (work / "runs" / "quickstart" / "report" / "report.html").is_file()
    shutil.rmtree(work / "runs", ignore_errors=True)
